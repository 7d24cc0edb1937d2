"""
Transform chains shared by every bundle. Bundles pass only what is data-specific (spacing, intensity window,
patch size); the chain itself lives here.

Networks see ``(C, S-I, R-L, A-P)``: after reorientation to RAS the slice axis is moved first, so E2ENet's
depth shift and (1, 3, 3) kernels act along and across slices as in the paper. Postprocessing inverts this.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.transforms import (
    Activationsd,
    CastToTyped,
    ClassesToIndicesd,
    Compose,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    Invertd,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAdjustContrastd,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropSamplesd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
    Transposed,
)

from e2enet_monai.transforms.brats import BraTSRegionsd, RegionsToBraTSLabeld, ReorderChannelsd
from e2enet_monai.transforms.coarse import CoarseViewd
from e2enet_monai.transforms.io import SaveSegmentationd
from e2enet_monai.transforms.post import ArgMaxd

__all__ = ["brats_postprocessing", "brats_transforms", "ct_postprocessing", "ct_transforms", "STAGES"]

STAGES = ("train", "val", "infer")
MAX_CENTRES_PER_CLASS = 20_000  # candidate crop centres kept per class and case (evenly spaced): bounds cached memory
SLICE_FIRST = (0, 3, 1, 2)  # (C, X, Y, Z) -> (C, Z, X, Y)


def _load_and_resample(stage: str, spacing: Sequence[float], reorder_channels: bool = False) -> tuple[list, list]:
    """Keys of the stage and the common head of every chain: load, channel first, (reorder), RAS, resample."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}.")
    keys = ["image"] if stage == "infer" else ["image", "label"]
    modes = ["bilinear"] if stage == "infer" else ["bilinear", "nearest"]
    chain = [
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys),
        *([ReorderChannelsd("image")] if reorder_channels else []),
        Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=spacing, mode=modes),
    ]
    return keys, chain


def _coarse_view(keys: Sequence[str], downsample: int, divisor: Sequence[int] | int) -> list:
    """:class:`CoarseViewd` when ``downsample > 1`` (labels centre-sampled), else nothing."""
    return [CoarseViewd(keys, downsample, divisor, label_keys="label")] if int(downsample) > 1 else []


def _augment(keys: Sequence[str], image_key: str, prob: float, flip_prob: float) -> list:
    """Flips on each axis; intensity scale/shift, noise, blur and gamma on the image (nnU-Net-like, CPU-cheap)."""
    flips = [RandFlipd(keys, prob=flip_prob, spatial_axis=axis) for axis in range(3)] if flip_prob > 0 else []
    return [
        *flips,
        RandScaleIntensityd(image_key, factors=0.25, prob=prob),
        RandShiftIntensityd(image_key, offsets=0.1, prob=prob),
        RandGaussianNoised(image_key, std=0.05, prob=prob),
        RandGaussianSmoothd(image_key, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=prob / 2),
        RandAdjustContrastd(image_key, gamma=(0.7, 1.5), prob=prob),
    ]


def ct_transforms(
    stage: str,
    spacing: Sequence[float],
    intensity_range: Sequence[float],
    patch_size: Sequence[int] | None = None,
    num_samples: int = 2,
    num_classes: int | None = None,
    pos_fraction: float = 1 / 3,
    aug_prob: float = 0.15,
    flip_prob: float = 0.2,
    downsample: int = 1,
    divisor: Sequence[int] | int = 1,
) -> Compose:
    """
    CT chain: load, channel first, RAS, resample to ``spacing`` (mm, x/y/z), clip ``intensity_range`` (HU) to
    [0, 1], slice axis first; for ``"train"`` also pad to and crop ``num_samples`` patches of ``patch_size`` and
    augment. As nnU-Net oversamples foreground, ``pos_fraction`` of the patches are centred on a voxel of an organ
    drawn uniformly among the ``num_classes - 1`` organs present (a small adrenal as often as the liver), the others
    on any body voxel; the crop centres are indexed once per case (cached with the volume).

    Args:
        stage: ``"train"``, ``"val"`` (image and label) or ``"infer"`` (image only).
        patch_size: ``(S-I, R-L, A-P)`` training patch; ``None`` trains on whole volumes.
        num_classes: classes including background, required to crop patches in ``"train"``.
        aug_prob: probability of each intensity augmentation.
        flip_prob: probability of mirroring along each axis (0 disables).
        downsample: > 1 shrinks the volume to what a top-k model's global network sees (:class:`CoarseViewd`
            with ``divisor``), before any crop (``patch_size`` is then in shrunk voxels).
    """
    keys, chain = _load_and_resample(stage, spacing)
    chain += [
        ScaleIntensityRanged("image", a_min=intensity_range[0], a_max=intensity_range[1], b_min=0.0, b_max=1.0,
                             clip=True),
        Transposed(keys, indices=SLICE_FIRST),
        *_coarse_view(keys, downsample, divisor),
    ]
    if stage == "train" and patch_size is not None:
        if num_classes is None:
            raise ValueError("ct_transforms(stage='train', patch_size=...) needs num_classes.")
        organs = num_classes - 1
        ratios = [organs * (1 - pos_fraction) / pos_fraction] + [1.0] * organs  # background (body) first
        chain += [
            SpatialPadd(keys, spatial_size=patch_size),
            ClassesToIndicesd("label", num_classes=num_classes, image_key="image", image_threshold=0.0,
                              max_samples_per_class=MAX_CENTRES_PER_CLASS),
            RandCropByLabelClassesd(keys, label_key="label", spatial_size=patch_size, ratios=ratios,
                                    num_classes=num_classes, num_samples=num_samples,
                                    indices_key="label_cls_indices", warn=False),
            DeleteItemsd("label_cls_indices"),
        ]
    if stage == "train":
        chain += _augment(keys, "image", aug_prob, flip_prob)
    chain.append(EnsureTyped(keys, track_meta=stage != "train"))
    return Compose(chain)


def brats_transforms(
    stage: str,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    patch_size: Sequence[int] | None = None,
    num_samples: int = 1,
    convention: str = "brats2021",
    aug_prob: float = 0.15,
    flip_prob: float = 0.5,
    downsample: int = 1,
    divisor: Sequence[int] | int = 1,
) -> Compose:
    """
    BraTS chain: load the 4 modalities (one file each, or one 4-D file reordered by the case's ``channel_order``)
    in the order T1c, T1, T2, FLAIR, RAS, resample to ``spacing``, z-score each channel over non-zero voxels,
    slice axis first; labels become TC/WT/ET channels (:class:`BraTSRegionsd`, ``convention`` unless the case
    names its own). ``"train"`` adds ``num_samples`` random crops of ``patch_size`` (``None``: whole volumes) and
    augmentation. ``downsample`` > 1 shrinks the volume first, as in :func:`ct_transforms`.
    """
    keys, chain = _load_and_resample(stage, spacing, reorder_channels=True)
    chain += [
        NormalizeIntensityd("image", nonzero=True, channel_wise=True),
        Transposed(keys, indices=SLICE_FIRST),
    ]
    if stage != "infer":
        chain.append(BraTSRegionsd("label", convention=convention))
    chain += _coarse_view(keys, downsample, divisor)
    if stage == "train" and patch_size is not None:
        chain += [
            SpatialPadd(keys, spatial_size=patch_size),
            RandSpatialCropSamplesd(keys, roi_size=patch_size, num_samples=num_samples, random_size=False),
        ]
    if stage == "train":
        chain += _augment(keys, "image", aug_prob, flip_prob)
    chain.append(EnsureTyped(keys, track_meta=stage != "train"))
    return Compose(chain)


def ct_postprocessing(preprocessing: Compose, output_dir: str | None = None, overwrite: bool = False,
                      output_postfix: str = "seg", invert_labels: bool = False, labels_in: bool = False) -> Compose:
    """
    Turn ``pred`` logits ``(C, *network grid)`` into a uint8 label map ``(1, *input grid)`` and (when
    ``output_dir`` is given) write ``<output_dir>/<case>/<case>_<postfix>.nii.gz`` without overwriting.

    By default the softmax probabilities are inverted (trilinear) back to the input grid, then argmax'ed: smooth
    boundaries, but C full-size float channels. ``invert_labels=True`` argmaxes on the network grid and inverts
    the label map by nearest neighbour: one channel instead of C, several times faster and lighter on a
    512x512 CT, with boundaries on the network grid (steps of up to one resampled voxel). ``labels_in=True``: the
    inferer already gave the label map ``(1, *network grid)`` (top-k's ``output="labels"``); it is inverted by
    nearest neighbour.
    """
    if labels_in:
        return _label_map_chain(preprocessing, [], None, True, output_dir, overwrite, output_postfix)
    activation = [] if invert_labels else [Activationsd("pred", softmax=True)]  # argmax needs no softmax
    return _label_map_chain(preprocessing, activation, ArgMaxd("pred"),
                            invert_labels, output_dir, overwrite, output_postfix)


def brats_postprocessing(preprocessing: Compose, output_dir: str | None = None, overwrite: bool = False,
                         enhancing_value: int = 3, output_postfix: str = "seg", invert_labels: bool = False,
                         labels_in: bool = False) -> Compose:
    """
    Sigmoid, threshold the TC/WT/ET channels at 0.5 and turn them into one label map ``(1, *input grid)``
    (0 background, 1 necrotic core, 2 edema, ``enhancing_value`` enhancing), inverted back to the input grid;
    optionally write it. By default the probabilities are inverted (trilinear) before thresholding;
    ``invert_labels=True`` builds the label map on the network grid and inverts it by nearest neighbour (faster,
    one channel instead of three). ``labels_in=True``: the inferer already thresholded the channels (0/1, top-k's
    ``output="labels"``); the label map is built from them on the network grid and inverted by nearest neighbour.
    """
    to_labels = RegionsToBraTSLabeld("pred", enhancing_value=enhancing_value)
    if labels_in:
        return _label_map_chain(preprocessing, [], to_labels, True, output_dir, overwrite, output_postfix)
    return _label_map_chain(preprocessing, [Activationsd("pred", sigmoid=True)], to_labels, invert_labels,
                            output_dir, overwrite, output_postfix)


def _label_map_chain(preprocessing: Compose, activation: list, to_labels: MapTransform | None, invert_labels: bool,
                     output_dir: str | None, overwrite: bool, postfix: str) -> Compose:
    """``activation`` and ``to_labels`` (``None``: ``pred`` is a label map already) with the inversion of
    ``preprocessing`` between them (probabilities, trilinear) or after them (``invert_labels``: the label map,
    nearest neighbour); then the saver if asked."""
    if invert_labels:
        chain = [*activation, *([to_labels] if to_labels is not None else []),
                 Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=True, to_tensor=True),
                 CastToTyped("pred", dtype=torch.uint8)]
    else:
        chain = [*activation,
                 Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True),
                 to_labels]
    if output_dir:
        chain.append(_saver(output_dir, overwrite, postfix))
    return Compose(chain)


def _saver(output_dir: str, overwrite: bool, postfix: str) -> SaveSegmentationd:
    return SaveSegmentationd("pred", output_dir=output_dir, output_postfix=postfix, output_ext=".nii.gz",
                             output_dtype="uint8", separate_folder=True, resample=False, print_log=False,
                             overwrite=overwrite)
