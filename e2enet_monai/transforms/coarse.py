"""The global network's view of a whole volume (top-k patch inference), for training that network on its own."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import MetaKeys, convert_to_tensor

from e2enet_monai.utils.patches import padded_shape, shrink_image, shrink_label

__all__ = ["CoarseViewd"]


class CoarseViewd(MapTransform):
    """
    Shrink images and labels exactly as :class:`~e2enet_monai.networks.NMSWNet` does before its global network:
    zero-pad the end of every spatial axis to a multiple of ``downsample * divisor``, average-pool images by
    ``downsample`` and sample labels at the centre voxel of every block (the grid of
    :class:`~e2enet_monai.losses.TopKPatchLoss`'s coarse term). A global network trained on this view of whole
    volumes sees in training what it sees in top-k inference; crops of a training canvas do not give it that.
    MONAI's ``Zoomd`` does not serve: it sizes its output from a float scale and samples labels at block corners.

    The affine of a ``MetaTensor`` is scaled by ``downsample`` and moved to the centre of the first block.

    Args:
        keys: keys to shrink.
        downsample: shrink factor (the network's ``downsample``).
        divisor: what each axis of the shrunk volume must be divisible by (the global network's divisor).
        label_keys: the keys among ``keys`` that hold labels (sampled, not averaged).

    Shape: ``(C, *S)`` -> ``(C, *ceil(S / (downsample * divisor)) * divisor)``.
    """

    def __init__(self, keys: KeysCollection, downsample: int = 3, divisor: Sequence[int] | int = 1,
                 label_keys: KeysCollection = ("label",), allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if int(downsample) < 1:
            raise ValueError(f"downsample must be >= 1, got {downsample}.")
        self.downsample = int(downsample)
        self.divisor = divisor
        self.label_keys = {label_keys} if isinstance(label_keys, str) else set(label_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            spatial = image.shape[1:]
            div = (self.divisor,) * len(spatial) if isinstance(self.divisor, int) else tuple(self.divisor)
            size = padded_shape(spatial, [self.downsample * int(v) for v in div])
            plain = convert_to_tensor(image, track_meta=False)
            shrink = shrink_label if key in self.label_keys else shrink_image
            small = shrink(plain.float() if shrink is shrink_image else plain, self.downsample, size)
            if isinstance(image, MetaTensor):
                affine = image.affine.clone().to(torch.float64)
                first = torch.full((len(spatial),), (self.downsample - 1) / 2, dtype=torch.float64)
                affine[:-1, -1] += affine[:-1, :-1] @ first
                affine[:-1, :-1] *= self.downsample
                small = MetaTensor(small, meta={k: v for k, v in image.meta.items() if k != MetaKeys.AFFINE})
                small.affine = affine
            d[key] = small
        return d
