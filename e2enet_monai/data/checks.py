"""
Sanity checks of input volumes before any long work: each failure is an :class:`InputError` that names the file,
what was expected and what was found.

What is refused, and why (a network given any of these still returns *something*, silently wrong):

- a missing, unreadable or truncated file;
- a 2-D image (fewer than 3 spatial axes, or an axis of one voxel);
- the wrong number of channels (files of a case, or the 4th axis of one file);
- NaN or infinite voxels: an error, not a fill, because no fill value is right for every modality (resampling
  spreads a NaN over its neighbours and the network turns the block into background); replace them first;
- a constant image (no anatomy: an all-zero CT still gets thousands of "organ" voxels);
- fewer voxels after resampling to the bundle's spacing than one network patch (the prediction would be mostly
  padding);
- label values outside the bundle's labels, and a label on another grid (shape or affine) than its image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from e2enet_monai.utils.errors import InputError

__all__ = ["check_image", "check_label", "load_volume"]


def load_volume(path: str | os.PathLike, what: str = "image") -> nib.Nifti1Image:
    """
    Load ``path`` with every voxel decompressed (a truncated or corrupt file fails here, naming the file). NIfTI is
    read with nibabel; other formats (NRRD, as 3D Slicer saves labels into MONAI Label, MHA, ...) with MONAI's
    ``LoadImage``, the reader the bundles' transforms use too, and returned as a NIfTI image with the RAS affine
    MONAI gives it, so grids compare alike.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist.")
    if path.name.endswith((".nii", ".nii.gz")):
        try:
            img = nib.load(str(path))
            np.asarray(img.dataobj)
        except Exception as e:
            raise InputError(f"{what} {path} cannot be read as NIfTI ({type(e).__name__}: {e}).") from e
        return img
    try:
        from monai.transforms import LoadImage

        data, meta = LoadImage(image_only=False)(str(path))
        return nib.Nifti1Image(np.asarray(data), np.asarray(meta["affine"], dtype=np.float64))
    except Exception as e:
        raise InputError(f"{what} {path} cannot be read ({type(e).__name__}: {e}); files other than NIfTI are read "
                         f"by MONAI's ITK reader: pip install itk.") from e


def _spatial(img: nib.Nifti1Image, path: Path) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3 or min(shape[:3]) < 2:
        raise InputError(f"image {path} is 2-D (shape {shape}); the bundles segment 3-D volumes (X, Y, Z with at "
                         f"least 2 voxels on each axis), e.g. a whole CT series, not one slice.")
    if len(shape) > 4:
        raise InputError(f"image {path} has shape {shape}: expected (X, Y, Z) or (X, Y, Z, channels).")
    return shape[0], shape[1], shape[2]


def _values(data: np.ndarray, path: Path) -> None:
    finite = np.isfinite(data)
    if not finite.all():
        bad = np.argwhere(~finite)
        raise InputError(f"image {path} has {len(bad)} NaN or infinite voxel(s) (the first at index "
                         f"{tuple(int(i) for i in bad[0])}); replace them (e.g. with the background intensity) "
                         f"before segmenting: no fill value is right for every scan.")
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        raise InputError(f"image {path} is constant (every voxel is {lo:g}): there is nothing to segment; check that "
                         f"the right file was given and that it was exported with its pixel data.")


def check_image(
    files: str | os.PathLike | Sequence[str | os.PathLike],
    in_channels: int = 1,
    spacing: Sequence[float] | None = None,
    patch_size: Sequence[int] | None = None,
) -> tuple[int, int, int]:
    """
    Check one case's image: a path, or a list of one 3-D file per channel (BraTS modalities).

    Args:
        files: the image file, or the per-channel files of one case.
        in_channels: channels the network expects (files in the list, or the 4th axis of a single file).
        spacing: the bundle's resampling spacing (mm, x/y/z); with ``patch_size``, refuse images that resample to
            fewer voxels than one patch.
        patch_size: the network patch (voxels).

    Returns:
        the spatial shape ``(X, Y, Z)`` of the (first) file.

    Raises:
        InputError: naming the file and what is wrong (see the module docstring).
    """
    paths = [Path(files)] if isinstance(files, (str, os.PathLike)) else [Path(f) for f in files]
    if not paths:
        raise InputError("an image entry of the datalist is an empty list: give a file (or one file per channel).")
    first = load_volume(paths[0])
    shape = _spatial(first, paths[0])
    if len(paths) == 1:
        found = int(first.shape[3]) if first.ndim == 4 else 1
        where = f"{paths[0]} has {found} channel(s) (shape {tuple(first.shape)})"
    else:
        found = len(paths)
        where = f"the case {[str(p) for p in paths]} has {found} file(s), one per channel"
    if found != in_channels:
        raise InputError(f"the bundle expects {in_channels} input channel(s), got {found}: {where}.")
    zooms = first.header.get_zooms()[:3]
    for path in paths:
        img = first if path == paths[0] else load_volume(path)
        if path != paths[0]:
            if tuple(img.shape[:3]) != shape or not np.allclose(img.affine, first.affine, atol=1e-3):
                raise InputError(f"channel file {path} has shape {tuple(img.shape)} but {paths[0]} has "
                                 f"{tuple(first.shape)} (or their affines differ): every channel must share one grid.")
            if img.ndim != 3:
                raise InputError(f"channel file {path} has shape {tuple(img.shape)}: one 3-D file per channel "
                                 f"expected.")
        _values(np.asarray(img.dataobj, dtype=np.float32), path)
    if spacing is not None and patch_size is not None:
        resampled = [max(1, round(n * float(z) / float(s))) for n, z, s in zip(shape, zooms, spacing)]
        if math.prod(resampled) < math.prod(int(p) for p in patch_size):
            raise InputError(
                f"image {paths[0]} is too small: {shape} voxels at {tuple(round(float(z), 3) for z in zooms)} mm "
                f"resample to about {tuple(resampled)} voxels at the bundle's spacing {tuple(spacing)} mm, fewer "
                f"than one network patch ({'x'.join(str(int(p)) for p in patch_size)} = "
                f"{math.prod(int(p) for p in patch_size)} voxels); give the whole scan, not a crop.")
    return shape


def check_label(label: str | os.PathLike, image: str | os.PathLike, label_values: Sequence[int]) -> None:
    """
    Check a training label: readable, on its image's grid (shape and affine of the first image file, read from its
    header), and holding only ``label_values``.
    """
    label, image = Path(label), Path(image)
    lbl = load_volume(label, "label")
    if not image.is_file():
        raise InputError(f"image {image} does not exist.")
    img = nib.load(str(image)) if image.name.endswith((".nii", ".nii.gz")) else load_volume(image)
    if tuple(lbl.shape[:3]) != tuple(img.shape[:3]) or not np.allclose(lbl.affine, img.affine, atol=1e-3):
        raise InputError(f"label {label} is on another grid than its image {image}: shape {tuple(lbl.shape)} vs "
                         f"{tuple(img.shape)}, affine diagonal {np.round(np.diag(lbl.affine)[:3], 3).tolist()} vs "
                         f"{np.round(np.diag(img.affine)[:3], 3).tolist()}; a label must share its image's grid.")
    found = np.unique(np.asarray(lbl.dataobj))
    fractional = found[~np.isclose(found, np.round(found))]
    if fractional.size:
        raise InputError(f"label {label} holds non-integer values (e.g. {fractional[:3].tolist()}); a label map must "
                         f"hold integer label values.")
    unknown = sorted(set(int(v) for v in np.round(found)) - set(int(v) for v in label_values))
    if unknown:
        raise InputError(f"label {label} holds value(s) {unknown} outside this bundle's labels {list(label_values)}; "
                         f"check the dataset and the bundle (labels are listed in its docs/README.md).")
