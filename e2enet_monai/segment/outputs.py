"""
What ``e2enet-segment`` writes next to a label map: a subset of structures, one mask per structure, volume and
intensity statistics and a PNG preview (the DICOM-SEG is in ``dicom_seg.py``). Every function takes arrays on the
input's grid.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from e2enet_monai.utils.errors import InputError
from e2enet_monai.utils.io import atomic_write_bytes

__all__ = ["COLOURS", "label_names", "label_statistics", "select_structures", "structure_ids", "write_masks",
           "write_preview", "write_statistics"]

# fixed overlay colours (RGB 0-1) by label value, so a structure looks the same in every preview
COLOURS = np.array([
    (0.90, 0.10, 0.10), (0.10, 0.60, 0.90), (0.20, 0.80, 0.20), (1.00, 0.80, 0.00), (0.60, 0.30, 0.80),
    (0.95, 0.50, 0.10), (0.55, 0.35, 0.20), (0.00, 0.75, 0.75), (0.95, 0.40, 0.70), (0.50, 0.80, 0.10),
    (0.10, 0.30, 0.70), (0.80, 0.80, 0.50), (0.70, 0.10, 0.40), (0.40, 0.90, 0.80), (0.30, 0.30, 0.30),
    (0.90, 0.60, 0.60),
])


def label_names(metadata: Mapping) -> dict[int, str]:
    """Label value -> structure name (background excluded) of the written label map, from a bundle's metadata:
    ``post_processed_outputs`` when the label values differ from the network channels (BraTS), else ``outputs``."""
    formats = metadata["network_data_format"]
    channel_def = formats.get("post_processed_outputs", formats["outputs"])["pred"]["channel_def"]
    return {int(k): str(v) for k, v in channel_def.items() if int(k) != 0}


def structure_ids(names: Mapping[int, str], wanted: Sequence[str]) -> list[int]:
    """The label values of the structures ``wanted`` (case and ``_``/space insensitive); an unknown one is an error
    that lists the bundle's names."""
    def key(name: str) -> str:
        return re.sub(r"[\s_]+", " ", name.strip().lower())

    by_key = {key(n): v for v, n in names.items()}
    unknown = [w for w in wanted if key(w) not in by_key]
    if unknown:
        raise InputError(f"unknown structure(s) {unknown} for --roi_subset; this bundle segments: "
                         f"{', '.join(repr(n) for n in names.values())}.")
    return [by_key[key(w)] for w in wanted]


def select_structures(labels: np.ndarray, keep: Sequence[int]) -> np.ndarray:
    """``labels`` with every value not in ``keep`` set to 0 (background)."""
    return np.where(np.isin(labels, list(keep)), labels, 0).astype(labels.dtype)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def write_masks(folder: Path, labels: np.ndarray, affine: np.ndarray, names: Mapping[int, str]) -> list[Path]:
    """One uint8 0/1 NIfTI per structure, ``<folder>/<structure_name>.nii.gz`` (lower case, ``_`` for spaces)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for value, name in names.items():
        path = folder / f"{_slug(name)}.nii.gz"
        nib.save(nib.Nifti1Image((labels == value).astype(np.uint8), affine), str(path))
        written.append(path)
    return written


def label_statistics(labels: np.ndarray, image: np.ndarray, affine: np.ndarray, names: Mapping[int, str],
                     channel_names: Sequence[str] | None = None) -> dict[str, dict]:
    """
    Per structure: voxels, volume in ml (from the voxel size of ``affine``) and the mean and standard deviation of
    the input intensity over it (per channel for a multi-channel input; ``null`` for an empty structure).

    Args:
        labels: ``(X, Y, Z)`` label map.
        image: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` input intensities on the same grid.
        affine: the grid's 4x4 voxel-to-world affine (mm).
        names: label value -> structure name.
        channel_names: names of the ``C`` channels (keys of the per-channel statistics).
    """
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    channels = image[..., None] if image.ndim == 3 else image
    keys = list(channel_names) if channel_names is not None else [str(c) for c in range(channels.shape[-1])]
    stats = {}
    for value, name in names.items():
        inside = labels == value
        n = int(inside.sum())
        entry: dict[str, object] = {"label": value, "voxels": n, "volume_ml": n * voxel_ml}
        values = [channels[..., c][inside].astype(np.float64) for c in range(channels.shape[-1])]
        means = [float(v.mean()) if n else None for v in values]
        stds = [float(v.std()) if n else None for v in values]
        if image.ndim == 3:
            entry.update(intensity_mean=means[0], intensity_std=stds[0])
        else:
            entry.update(intensity_mean=dict(zip(keys, means)), intensity_std=dict(zip(keys, stds)))
        stats[name] = entry
    return stats


def write_statistics(path: Path, stats: Mapping[str, dict]) -> None:
    """``stats`` as indented JSON, written atomically."""
    atomic_write_bytes(path, (json.dumps(stats, indent=2) + "\n").encode())


def write_preview(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, affine: np.ndarray,
                  names: Mapping[int, str], title: str = "") -> None:
    """
    A PNG of the axial, coronal and sagittal mid-slices through the volume (viewed in RAS, as radiology viewers
    show it: patient left on the image right) with the labels overlaid in :data:`COLOURS` and a legend of the
    structures present. ``image`` is ``(X, Y, Z)``, or ``(X, Y, Z, C)`` of which the first channel is shown.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as e:
        raise InputError("--preview needs matplotlib: pip install matplotlib (or e2enet-monai[all]).") from e
    grey = image if image.ndim == 3 else image[..., 0]
    ornt = nib.orientations.io_orientation(affine)
    to_ras = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt(("R", "A", "S")))
    grey = nib.orientations.apply_orientation(grey, to_ras)
    lab = nib.orientations.apply_orientation(labels, to_ras)
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))[np.argsort(ornt[:, 0])]
    lo, hi = np.percentile(grey, [1, 99])
    cx, cy, cz = (s // 2 for s in grey.shape)
    views = [("axial", grey[:, :, cz], lab[:, :, cz], zooms[1] / zooms[0]),
             ("coronal", grey[:, cy, :], lab[:, cy, :], zooms[2] / zooms[0]),
             ("sagittal", grey[cx, :, :], lab[cx, :, :], zooms[2] / zooms[1])]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6))
    for ax, (view, g, lb, aspect) in zip(axes, views):
        # RAS arrays: the slice's first axis horizontal, mirrored so that patient right (or anterior) is on the
        # image left, its second axis upwards
        ax.imshow(np.flipud(g.T)[:, ::-1], cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        rgba = np.zeros((*lb.shape, 4))
        for value in names:
            rgba[lb == value] = (*COLOURS[(value - 1) % len(COLOURS)], 0.45)
        ax.imshow(np.flipud(rgba.transpose(1, 0, 2))[:, ::-1], aspect=aspect, interpolation="nearest")
        ax.set_title(view)
        ax.axis("off")
    present = [v for v in names if (labels == v).any()]
    fig.legend(handles=[Patch(color=COLOURS[(v - 1) % len(COLOURS)], label=names[v]) for v in present],
               loc="lower center", ncol=min(5, max(1, len(present))), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(bottom=0.18)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
