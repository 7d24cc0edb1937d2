"""Channel argmax of a prediction, fast on CPU."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import get_track_meta
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_tensor

__all__ = ["ArgMaxd", "channel_argmax"]


def channel_argmax(pred: torch.Tensor, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """
    Index of the largest channel per voxel: ``(C, *spatial)`` -> ``(1, *spatial)`` of ``dtype``, the first
    channel on ties (as ``torch.argmax``). As MONAI's transforms do, the result is a MetaTensor while MONAI tracks
    meta data (its default), carrying the input's meta data and applied operations, so ``Invertd`` can follow.

    ``torch.max(dim=0).indices`` gives the same indices as ``torch.argmax(dim=0)`` several times faster on CPU
    (3.1 s against 0.35 s for 14 x 250 x 274 x 274 logits on 2 cores, torch 2.13; pytorch/pytorch#140000).
    """
    if pred.ndim < 2:
        raise ValueError(f"channel_argmax expects a (C, *spatial) prediction, got shape {tuple(pred.shape)}.")
    pred = convert_to_tensor(pred, track_meta=get_track_meta())
    labels = torch.max(convert_to_tensor(pred, track_meta=False), dim=0, keepdim=True).indices
    return convert_to_dst_type(labels, dst=pred, dtype=dtype)[0]  # a MetaTensor pred lends its meta data


class ArgMaxd(MapTransform):
    """
    Dictionary :func:`channel_argmax`: turn ``(C, *spatial)`` logits or probabilities into a ``(1, *spatial)``
    label map. MONAI's ``AsDiscreted(argmax=True)`` gives the same labels but calls ``torch.argmax``, which is the
    slowest step of CPU postprocessing on a full-size CT (see :func:`channel_argmax`).

    Args:
        keys: prediction keys.
        dtype: label dtype (``torch.uint8`` holds up to 256 classes).
    """

    def __init__(self, keys: KeysCollection, dtype: torch.dtype = torch.uint8, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.dtype = dtype

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = channel_argmax(d[key], self.dtype)
        return d
