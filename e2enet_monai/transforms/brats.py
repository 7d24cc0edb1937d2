"""BraTS label conventions: label maps to overlapping TC/WT/ET regions and back, and modality reordering."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_tensor

__all__ = ["BRATS_CONVENTIONS", "BraTSRegionsd", "RegionsToBraTSLabeld", "ReorderChannelsd"]

# label values of (necrotic core, edema, enhancing tumour) in each dataset's label maps
BRATS_CONVENTIONS: dict[str, tuple[int, int, int]] = {
    "brats2021": (1, 2, 4),
    "brats2023": (1, 2, 3),
    "msd": (2, 1, 3),  # MSD Task01: 1 edema, 2 non-enhancing tumour, 3 enhancing tumour
}


def _convention(name: str) -> tuple[int, int, int]:
    if name not in BRATS_CONVENTIONS:
        raise ValueError(f"unknown BraTS label convention {name!r}; choose from {sorted(BRATS_CONVENTIONS)}.")
    return BRATS_CONVENTIONS[name]


class BraTSRegionsd(MapTransform):
    """
    Convert a BraTS label map ``(1, X, Y, Z)`` to three region channels ``(3, X, Y, Z)``: tumour core
    (necrotic + enhancing), whole tumour (all tumour labels) and enhancing tumour.

    Args:
        keys: label keys.
        convention: default label convention, ``brats2021`` (1, 2, 4), ``brats2023`` (1, 2, 3) or ``msd``.
        convention_key: data key that overrides ``convention`` per case (as written by prepare_data).
    """

    def __init__(self, keys: KeysCollection, convention: str = "brats2021", convention_key: str = "brats_convention",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        _convention(convention)
        self.convention = convention
        self.convention_key = convention_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        ncr, ed, et = _convention(d.get(self.convention_key, self.convention))
        for key in self.key_iterator(d):
            label = d[key]
            if label.shape[0] != 1:
                raise ValueError(f"{key!r} must be a single-channel label map, got shape {tuple(label.shape)}.")
            unknown = set(torch.unique(label).int().tolist()) - {0, ncr, ed, et}
            if unknown:
                convention = d.get(self.convention_key, self.convention)
                raise ValueError(f"{key!r} holds label values {sorted(unknown)} outside the {convention} "
                                 f"convention (0, {ncr}, {ed}, {et}).")
            tc = (label == ncr) | (label == et)
            wt = tc | (label == ed)
            dtype = label.dtype if label.is_floating_point() else torch.float32
            d[key] = torch.cat([tc, wt, label == et], dim=0).to(dtype)
        return d


class RegionsToBraTSLabeld(MapTransform):
    """
    Convert thresholded region channels ``(3, X, Y, Z)`` (TC, WT, ET) to one label map ``(1, X, Y, Z)``:
    0 background, 1 necrotic core (TC without ET), 2 edema (WT without TC), 3 enhancing (or ``enhancing_value``,
    e.g. 4 for BraTS 2021 viewers). Nested regions are enforced: ET counts only inside TC, TC only inside WT.
    """

    def __init__(self, keys: KeysCollection, enhancing_value: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.enhancing_value = enhancing_value

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            regions = convert_to_tensor(d[key], track_meta=False) > 0.5
            if regions.shape[0] != 3:
                raise ValueError(f"{key!r} must have 3 region channels (TC, WT, ET), got shape {tuple(regions.shape)}.")
            wt = regions[1]
            tc = regions[0] & wt
            et = regions[2] & tc
            label = torch.zeros_like(wt, dtype=torch.uint8)
            label[wt] = 2
            label[tc] = 1
            label[et] = self.enhancing_value
            # a MetaTensor prediction lends its affine and source file name, for inversion and saving
            d[key] = convert_to_dst_type(label[None], dst=d[key], dtype=torch.uint8)[0]
        return d


class ReorderChannelsd(MapTransform):
    """
    Reorder the channels of an image whose case gives an order under ``order_key`` (e.g. MSD Task01's 4-D images,
    stored FLAIR, T1w, T1gd, T2w, become T1c, T1, T2, FLAIR with order ``[2, 1, 3, 0]``); other cases pass.
    """

    def __init__(self, keys: KeysCollection, order_key: str = "channel_order", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.order_key = order_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        order: Sequence[int] | None = d.get(self.order_key)
        if order is None:
            return d
        for key in self.key_iterator(d):
            if d[key].shape[0] != len(order):
                raise ValueError(f"{key!r} has {d[key].shape[0]} channels but its channel order lists {len(order)}.")
            d[key] = d[key][list(order)]
        return d
