"""
Deterministic synthetic phantoms written in the raw folder layouts of BTCV, AMOS22 and BraTS, so that tests and
the demo exercise the real preparation code. They are small ("mini patients" about 10 cm across) so CPUs train
on them in minutes, and each organ has its own intensity, position and size so that a trained network can
segment them while an untrained one scores near zero.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from e2enet_monai.data.labels import AMOS_LABELS, BTCV_LABELS

__all__ = [
    "brats_phantom",
    "ct_phantom",
    "write_amos",
    "write_brats2021",
    "write_brats2023",
    "write_btcv",
    "write_msd_brain",
    "write_synthetic",
]

# (label name, centre as a fraction of the body box in x/y/z, radii as a fraction of the body, HU)
_ORGANS = {
    "spleen": ((0.78, 0.62, 0.62), (0.11, 0.11, 0.12), 45),
    "right kidney": ((0.27, 0.70, 0.45), (0.08, 0.09, 0.12), 150),
    "left kidney": ((0.73, 0.70, 0.45), (0.08, 0.09, 0.12), 160),
    "gallbladder": ((0.36, 0.35, 0.55), (0.05, 0.05, 0.06), 10),
    "esophagus": ((0.52, 0.62, 0.86), (0.04, 0.04, 0.12), 35),
    "liver": ((0.30, 0.48, 0.66), (0.20, 0.22, 0.18), 60),
    "stomach": ((0.64, 0.40, 0.68), (0.12, 0.10, 0.11), 25),
    "aorta": ((0.53, 0.68, 0.50), (0.04, 0.04, 0.35), 200),
    "inferior vena cava": ((0.44, 0.66, 0.50), (0.04, 0.04, 0.30), 130),
    "postcava": ((0.44, 0.66, 0.50), (0.04, 0.04, 0.30), 130),
    "portal and splenic veins": ((0.55, 0.52, 0.52), (0.10, 0.03, 0.03), 170),
    "pancreas": ((0.58, 0.56, 0.40), (0.12, 0.04, 0.05), 90),
    "right adrenal gland": ((0.33, 0.68, 0.66), (0.03, 0.03, 0.05), 70),
    "left adrenal gland": ((0.67, 0.68, 0.66), (0.03, 0.03, 0.05), 75),
    "duodenum": ((0.47, 0.42, 0.42), (0.07, 0.05, 0.06), 30),
    "bladder": ((0.50, 0.40, 0.10), (0.10, 0.09, 0.08), 5),
    "prostate/uterus": ((0.50, 0.55, 0.05), (0.05, 0.05, 0.05), 55),
}


def _ellipsoid(grid: tuple[np.ndarray, ...], centre, radii, wobble: np.ndarray | None = None) -> np.ndarray:
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    if wobble is not None:
        d = d + wobble
    return d <= 1.0


def _smooth_noise(shape: Sequence[int], rng: np.random.Generator, scale: float) -> np.ndarray:
    coarse = rng.normal(0.0, scale, size=tuple(max(2, s // 8) for s in shape))
    # nearest-neighbour upsampling of coarse noise: cheap, smooth enough to make organ borders irregular
    idx = [np.minimum((np.arange(s) * c) // s, c - 1) for s, c in zip(shape, coarse.shape)]
    return coarse[np.ix_(*idx)]


def ct_phantom(
    labels: Sequence[str], shape: Sequence[int] = (128, 128, 48), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """
    A CT-like volume in HU and its label map (``labels[i]`` drawn with value ``i``; ``labels[0]`` is background).

    Returns:
        ``(image float32 (X, Y, Z), label uint8 (X, Y, Z))`` in RAS voxel order.
    """
    rng = np.random.default_rng(seed)
    grid = tuple(np.linspace(0.0, 1.0, s, dtype=np.float32) for s in shape)
    grid = np.meshgrid(*grid, indexing="ij")
    image = np.full(shape, -1000.0, dtype=np.float32)  # air
    body_r = (0.46 + rng.uniform(-0.02, 0.02), 0.40 + rng.uniform(-0.02, 0.02), 0.7)
    body = _ellipsoid(grid, (0.5, 0.5, 0.5), body_r)
    image[body] = -90.0  # fat
    image[_ellipsoid(grid, (0.5, 0.5, 0.5), (body_r[0] - 0.04, body_r[1] - 0.04, 0.7))] = 20.0  # soft tissue
    spine = _ellipsoid(grid, (0.5, 0.82, 0.5), (0.06, 0.06, 0.7))
    label = np.zeros(shape, dtype=np.uint8)
    # largest first, so that a small organ lying on a large one (the gallbladder on the liver) stays whole
    for value in sorted(range(1, len(labels)), key=lambda v: -np.prod(_ORGANS[labels[v]][1])):
        centre, radii, hu = _ORGANS[labels[value]]
        centre = tuple(c + rng.uniform(-0.02, 0.02) for c in centre)
        radii = tuple(r * rng.uniform(0.9, 1.1) for r in radii)
        organ = _ellipsoid(grid, centre, radii, _smooth_noise(shape, rng, 0.15)) & body
        label[organ] = value
        image[organ] = hu
    image[spine & body] = 700.0  # bone, unlabelled
    label[spine] = 0
    image += rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    return image.astype(np.float32), label


def brats_phantom(shape: Sequence[int] = (64, 64, 48), seed: int = 0, enhancing_value: int = 4):
    """
    Four co-registered MR-like channels (T1c, T1, T2, FLAIR) and a BraTS label map: a brain ellipsoid with a
    tumour of necrotic centre (1), enhancing rim (``enhancing_value``) and surrounding edema (2).

    Returns:
        ``(image float32 (4, X, Y, Z), label uint8 (X, Y, Z))``.
    """
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.linspace(0.0, 1.0, s, dtype=np.float32) for s in shape), indexing="ij")
    brain = _ellipsoid(grid, (0.5, 0.5, 0.5), (0.42, 0.46, 0.40))
    centre = tuple(rng.uniform(0.35, 0.65, size=3))
    r = rng.uniform(0.10, 0.15)
    wob = _smooth_noise(shape, rng, 0.2)
    edema = _ellipsoid(grid, centre, (2.0 * r,) * 3, wob) & brain
    core = _ellipsoid(grid, centre, (r,) * 3, wob) & brain
    necrosis = _ellipsoid(grid, centre, (0.55 * r,) * 3, wob) & brain
    label = np.zeros(shape, dtype=np.uint8)
    label[edema] = 2
    label[core] = enhancing_value
    label[necrosis] = 1
    # intensities per channel (T1c, T1, T2, FLAIR) for background brain, edema, enhancing, necrosis
    table = {
        "brain": (0.50, 0.55, 0.45, 0.40),
        "edema": (0.55, 0.45, 0.85, 0.90),
        "enhancing": (1.00, 0.50, 0.70, 0.70),
        "necrosis": (0.20, 0.30, 0.95, 0.50),
    }
    image = np.zeros((4, *shape), dtype=np.float32)
    for c in range(4):
        image[c][brain] = table["brain"][c]
        image[c][edema] = table["edema"][c]
        image[c][label == enhancing_value] = table["enhancing"][c]
        image[c][necrosis] = table["necrosis"][c]
        image[c] += rng.normal(0.0, 0.04, size=shape).astype(np.float32) * brain
    return (1000.0 * image).astype(np.float32), label


def _affine(spacing: Sequence[float], flip_lr: bool) -> np.ndarray:
    """RAS affine, or an LPS-like one (x and y axes reversed) for ``flip_lr``: a non-RAS orientation."""
    aff = np.diag([*spacing, 1.0]).astype(np.float64)
    if flip_lr:
        aff[0, 0], aff[1, 1] = -spacing[0], -spacing[1]
    return aff


def _save(array: np.ndarray, affine: np.ndarray, path: Path, dtype) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def _write_ct(image, label, path_img: Path, path_lbl: Path | None, spacing, flip: bool) -> None:
    if flip:  # store the same anatomy in a flipped voxel order with a matching affine
        image, label = image[::-1, ::-1], label[::-1, ::-1]
    aff = _affine(spacing, flip)
    _save(image, aff, path_img, np.int16)
    if path_lbl is not None:
        _save(label, aff, path_lbl, np.uint8)


def write_btcv(root: str | os.PathLike, num_train: int = 6, num_test: int = 1, shape=(128, 128, 48),
               spacing=(0.8, 0.8, 2.5), seed: int = 0) -> Path:
    """``RawData/Training/{img,label}/{img,label}XXXX.nii.gz`` and ``RawData/Testing/img/``; real BTCV ids
    (0001-0010, then 0021-0040) are used in order. Every third case is stored in a non-RAS orientation."""
    root = Path(root)
    ids = [*range(1, 11), *range(21, 41)]
    for i in range(num_train):
        image, label = ct_phantom(BTCV_LABELS, shape, seed=seed + i)
        cid = f"{ids[i]:04d}"
        _write_ct(image, label, root / "RawData/Training/img" / f"img{cid}.nii.gz",
                  root / "RawData/Training/label" / f"label{cid}.nii.gz", spacing, flip=i % 3 == 2)
    for j in range(num_test):
        image, label = ct_phantom(BTCV_LABELS, shape, seed=seed + 1000 + j)
        _write_ct(image, label, root / "RawData/Testing/img" / f"img{61 + j:04d}.nii.gz", None, spacing,
                  flip=j % 2 == 1)
    return root


def write_amos(root: str | os.PathLike, num_train: int = 6, num_val: int = 2, num_test: int = 1,
               num_mri: int = 1, shape=(128, 128, 48), spacing=(0.8, 0.8, 2.5), seed: int = 0) -> Path:
    """``amos22/{imagesTr,labelsTr,imagesVa,labelsVa,imagesTs}/amos_XXXX.nii.gz`` and ``dataset.json``; CT ids
    below 500 and ``num_mri`` MRI-range ids (>= 500, to be excluded by preparation) in imagesTr."""
    root = Path(root) / "amos22"
    entries: dict[str, list] = {"training": [], "validation": [], "test": []}
    cid = 1
    for split, count, img_dir, lbl_dir in (("training", num_train, "imagesTr", "labelsTr"),
                                           ("validation", num_val, "imagesVa", "labelsVa"),
                                           ("test", num_test, "imagesTs", None)):
        for _ in range(count):
            image, label = ct_phantom(AMOS_LABELS, shape, seed=seed + cid)
            name = f"amos_{cid:04d}.nii.gz"
            _write_ct(image, label, root / img_dir / name, root / lbl_dir / name if lbl_dir else None, spacing,
                      flip=cid % 3 == 0)
            label = {"label": f"./{lbl_dir}/{name}"} if lbl_dir else {}
            entries[split].append({"image": f"./{img_dir}/{name}", **label})
            cid += 1
    for k in range(num_mri):
        image, label = ct_phantom(AMOS_LABELS, shape, seed=seed + 500 + k)
        name = f"amos_{500 + k:04d}.nii.gz"
        _write_ct(image, label, root / "imagesTr" / name, root / "labelsTr" / name, spacing, flip=False)
        entries["training"].append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "AMOS", "description": "synthetic phantoms in the AMOS22 layout",
            "labels": {str(i): n for i, n in enumerate(AMOS_LABELS)}, **entries}
    (root / "dataset.json").write_text(__import__("json").dumps(meta, indent=2))
    return root


def _write_brats(root: str | os.PathLike, num_cases: int, shape, seed: int, name_format: str, sep: str,
                 suffixes: Sequence[str], enhancing: int) -> Path:
    """Case folders ``<name>/<name><sep><suffix>.nii.gz`` (channels in brats_phantom's order T1c, T1, T2, FLAIR)
    and ``<name><sep>seg.nii.gz``, LPS-like 1 mm affines as BraTS files have."""
    root = Path(root)
    aff = _affine((1.0, 1.0, 1.0), flip_lr=True)
    for i in range(num_cases):
        name = name_format.format(i)
        image, label = brats_phantom(shape, seed + i, enhancing)
        for c, suffix in enumerate(suffixes):
            _save(image[c], aff, root / name / f"{name}{sep}{suffix}.nii.gz", np.float32)
        _save(label, aff, root / name / f"{name}{sep}seg.nii.gz", np.uint8)
    return root


def write_brats2021(root: str | os.PathLike, num_cases: int = 6, shape=(64, 64, 48), seed: int = 0) -> Path:
    """``BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz`` (enhancing tumour = 4)."""
    return _write_brats(root, num_cases, shape, seed, "BraTS2021_{:05d}", "_", ("t1ce", "t1", "t2", "flair"), 4)


def write_brats2023(root: str | os.PathLike, num_cases: int = 6, shape=(64, 64, 48), seed: int = 0) -> Path:
    """``BraTS-GLI-XXXXX-000/BraTS-GLI-XXXXX-000-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (enhancing tumour = 3)."""
    return _write_brats(root, num_cases, shape, seed, "BraTS-GLI-{:05d}-000", "-", ("t1c", "t1n", "t2w", "t2f"), 3)


def write_msd_brain(root: str | os.PathLike, num_cases: int = 6, shape=(64, 64, 48), seed: int = 0) -> Path:
    """``Task01_BrainTumour/{imagesTr,labelsTr}/BRATS_XXX.nii.gz``: 4-D images (FLAIR, T1w, T1gd, T2w) and labels
    1 edema, 2 non-enhancing tumour, 3 enhancing tumour, plus ``dataset.json``."""
    import json

    root = Path(root) / "Task01_BrainTumour"
    training = []
    for i in range(num_cases):
        image, label = brats_phantom(shape, seed + i, enhancing_value=4)
        msd = np.zeros_like(label)
        msd[label == 2], msd[label == 1], msd[label == 4] = 1, 2, 3
        image = np.moveaxis(image[[3, 1, 0, 2]], 0, -1)  # (X, Y, Z, 4): FLAIR, T1w, T1gd, T2w
        name = f"BRATS_{i + 1:03d}.nii.gz"
        aff = _affine((1.0, 1.0, 1.0), flip_lr=True)
        _save(image, aff, root / "imagesTr" / name, np.float32)
        _save(msd, aff, root / "labelsTr" / name, np.uint8)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
            "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


WRITERS = {"btcv": write_btcv, "amos": write_amos, "brats2021": write_brats2021, "brats2023": write_brats2023,
           "msd_brain": write_msd_brain}


def write_synthetic(dataset: str, root: str | os.PathLike, **kwargs) -> Path:
    """Write the phantom dataset ``dataset`` (one of :data:`WRITERS`) under ``root``; returns the raw folder."""
    if dataset not in WRITERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(WRITERS)}.")
    return WRITERS[dataset](root, **kwargs)
