"""
Turn a raw BTCV / AMOS22 / BraTS 2021 / BraTS 2023 / MSD Task01 folder into a datalist JSON with 5 folds.

The datalist follows MONAI's decathlon format (paths relative to the JSON's folder, read with
``monai.data.load_decathlon_datalist``) plus a ``fold`` per training case. ``validation`` holds a fixed split
where the dataset has one (BTCV's 24/6 split, AMOS's official validation set); fold -1 selects it.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import load_decathlon_datalist

from e2enet_monai.data.checks import check_label
from e2enet_monai.data.labels import AMOS_LABELS, BRATS_LABELS, BTCV_LABELS
from e2enet_monai.utils.errors import InputError, exit_on_input_error
from e2enet_monai.utils.io import atomic_write_bytes

__all__ = ["DatasetError", "PREPARERS", "brats_image_lists", "check_case", "load_split", "prepare_dataset"]

NUM_FOLDS = 5
BTCV_VALIDATION_IDS = tuple(range(35, 41))  # the common 24/6 split validates on img0035-img0040


# label values each dataset's label maps may hold (BraTS: the union of its conventions, see BraTSRegionsd)
BRATS_LABEL_VALUES = (0, 1, 2, 3, 4)


class DatasetError(InputError):
    """A raw dataset folder or datalist that cannot be used as it is; the message names the case and files."""


def _header(path: Path, case: str, read_data: bool = False):
    if not path.is_file():
        raise DatasetError(f"case {case}: file {path} does not exist.")
    try:
        img = nib.load(str(path))
        if read_data:  # decompress every voxel: a truncated or corrupt file fails here, not mid-training
            np.asarray(img.dataobj)
        return img.shape, img.affine
    except Exception as e:
        raise DatasetError(f"case {case}: cannot read {path} as NIfTI ({type(e).__name__}: {e}).") from e


def check_case(case: str, images: list[Path], label: Path | None, four_d: bool = False, read_data: bool = True,
               label_values: tuple[int, ...] | None = None) -> None:
    """Check that every file exists and is readable (all voxels when ``read_data``), that all image files and
    the label share one grid (shape and affine) and, with ``label_values`` (needs ``read_data``), that the label
    holds no other values."""
    ref_path = images[0]
    full_shape, ref_aff = _header(ref_path, case, read_data)
    if four_d and (len(full_shape) != 4 or full_shape[3] != 4):
        raise DatasetError(f"case {case}: {ref_path} should be 4-D with 4 channels, has shape {tuple(full_shape)}.")
    ref_shape = full_shape[:3]
    for path in [*images[1:], *([label] if label else [])]:
        shape, aff = _header(path, case, read_data)
        if tuple(shape[:3]) != tuple(ref_shape) or not np.allclose(aff, ref_aff, atol=1e-3):
            raise DatasetError(
                f"case {case}: {path} has grid shape {tuple(shape[:3])} (affine diagonal "
                f"{np.round(np.diag(aff)[:3], 3).tolist()}) but {ref_path} has shape {tuple(ref_shape)} "
                f"(affine diagonal {np.round(np.diag(ref_aff)[:3], 3).tolist()}); image and label must share one grid."
            )
    if label is not None and label_values is not None and read_data:
        try:
            check_label(label, ref_path, label_values)
        except InputError as e:
            raise DatasetError(f"case {case}: {e}") from e


def _assign_folds(cases: list[dict], seed: int) -> list[dict]:
    order = sorted(range(len(cases)), key=lambda i: cases[i]["case"])
    random.Random(seed).shuffle(order)
    for rank, i in enumerate(order):
        cases[i]["fold"] = rank % NUM_FOLDS
    return cases


def _btcv(raw: Path) -> dict:
    img_dir, lbl_dir = raw / "RawData/Training/img", raw / "RawData/Training/label"
    if not img_dir.is_dir():
        raise DatasetError(f"{raw} is not a BTCV folder: {img_dir} does not exist (expected RawData/Training/img).")
    train, val = [], []
    for img in sorted(img_dir.glob("img*.nii.gz")):
        cid = re.fullmatch(r"img(\d+)\.nii\.gz", img.name).group(1)
        entry = {"case": cid, "image": img, "label": lbl_dir / f"label{cid}.nii.gz"}
        (val if int(cid) in BTCV_VALIDATION_IDS else train).append(entry)
    tests = [{"case": re.sub(r"\D", "", p.name), "image": p}
             for p in sorted((raw / "RawData/Testing/img").glob("*.nii.gz"))]
    return {"dataset": "btcv", "labels": BTCV_LABELS, "label_values": tuple(range(len(BTCV_LABELS))),
            "training": train + val, "validation": val, "testing": tests}


def _amos(raw: Path) -> dict:
    root = raw / "amos22" if (raw / "amos22").is_dir() else raw
    if not (root / "imagesTr").is_dir():
        raise DatasetError(f"{raw} is not an AMOS22 folder: {root / 'imagesTr'} does not exist.")

    def cases(img_dir: str, lbl_dir: str | None) -> list[dict]:
        out = []
        for img in sorted((root / img_dir).glob("amos_*.nii.gz")):
            cid = int(re.fullmatch(r"amos_(\d+)\.nii\.gz", img.name).group(1))
            if cid >= 500:  # MRI cases (AMOS task 2) are not part of the CT bundle
                continue
            out.append({"case": img.name[: -len(".nii.gz")], "image": img,
                        **({"label": root / lbl_dir / img.name} if lbl_dir else {})})
        return out

    val = cases("imagesVa", "labelsVa") if (root / "imagesVa").is_dir() else []
    tests = cases("imagesTs", None) if (root / "imagesTs").is_dir() else []
    return {"dataset": "amos", "labels": AMOS_LABELS, "label_values": tuple(range(len(AMOS_LABELS))),
            "training": cases("imagesTr", "labelsTr"), "validation": val, "testing": tests}


def _brats_folders(raw: Path, pattern: str, modalities: tuple[str, ...], sep: str, convention: str) -> dict:
    dirs = sorted(d for d in raw.iterdir() if d.is_dir() and re.fullmatch(pattern, d.name)) if raw.is_dir() else []
    if not dirs:
        raise DatasetError(f"{raw} holds no case folders matching {pattern!r}.")
    train = []
    for d in dirs:
        images = [d / f"{d.name}{sep}{m}.nii.gz" for m in modalities]
        train.append({"case": d.name, "image": images, "label": d / f"{d.name}{sep}seg.nii.gz",
                      "brats_convention": convention})
    return {"dataset": convention, "labels": BRATS_LABELS, "label_values": BRATS_LABEL_VALUES, "training": train,
            "validation": [], "testing": []}


def _brats2021(raw: Path) -> dict:
    # bundle channel order: T1c, T1, T2, FLAIR
    return _brats_folders(raw, r"BraTS2021_\d+", ("t1ce", "t1", "t2", "flair"), "_", "brats2021")


def _brats2023(raw: Path) -> dict:
    return _brats_folders(raw, r"BraTS-GLI-\d+-\d+", ("t1c", "t1n", "t2w", "t2f"), "-", "brats2023")


def _msd_brain(raw: Path) -> dict:
    root = raw / "Task01_BrainTumour" if (raw / "Task01_BrainTumour").is_dir() else raw
    if not (root / "imagesTr").is_dir():
        raise DatasetError(f"{raw} is not an MSD Task01 folder: {root / 'imagesTr'} does not exist.")
    train = [
        {"case": p.name[: -len(".nii.gz")], "image": p, "label": root / "labelsTr" / p.name,
         "brats_convention": "msd", "channel_order": [2, 1, 3, 0]}  # FLAIR, T1w, T1gd, T2w -> T1c, T1, T2, FLAIR
        for p in sorted((root / "imagesTr").glob("BRATS_*.nii.gz"))
    ]
    return {"dataset": "msd", "labels": BRATS_LABELS, "label_values": BRATS_LABEL_VALUES, "training": train,
            "validation": [], "testing": []}


PREPARERS: dict[str, Callable[[Path], dict]] = {
    "btcv": _btcv, "amos": _amos, "brats2021": _brats2021, "brats2023": _brats2023, "msd_brain": _msd_brain,
}


def prepare_dataset(dataset: str, raw_dir: str | os.PathLike, output: str | os.PathLike, seed: int = 0,
                    overwrite: bool = False, read_data: bool = True) -> Path:
    """
    Check a raw dataset folder and write its datalist JSON.

    Args:
        dataset: one of ``btcv``, ``amos``, ``brats2021``, ``brats2023``, ``msd_brain``.
        raw_dir: the folder as downloaded (e.g. the one holding ``RawData`` for BTCV).
        output: datalist JSON path; paths inside are relative to its folder.
        seed: seed of the fold assignment (sorted case ids, shuffled, then dealt round-robin into 5 folds).
        overwrite: replace an existing datalist.
        read_data: decompress every file to catch truncated or corrupt ones (False: headers only, faster).

    Raises:
        DatasetError: naming the case and file that is missing, unreadable or on another grid.
    """
    if dataset not in PREPARERS:
        raise DatasetError(f"unknown dataset {dataset!r}; choose from {sorted(PREPARERS)}.")
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it.")
    raw = Path(raw_dir).resolve()
    found = PREPARERS[dataset](raw)
    if not found["training"]:
        raise DatasetError(f"{raw} holds no labelled {dataset} cases.")
    base = output.parent.resolve()
    rel = lambda p: os.path.relpath(p, base)  # noqa: E731
    for part in ("training", "validation", "testing"):
        for entry in found[part]:
            images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
            check_case(entry["case"], images, entry.get("label"), four_d="channel_order" in entry, read_data=read_data,
                       label_values=found["label_values"])
    training = _assign_folds([dict(e) for e in found["training"]], seed)
    val_cases = {e["case"] for e in found["validation"]}

    def serial(entry: dict) -> dict:
        out = dict(entry)
        out["image"] = [rel(p) for p in entry["image"]] if isinstance(entry["image"], list) else rel(entry["image"])
        if "label" in entry:
            out["label"] = rel(entry["label"])
        return out

    datalist = {
        "dataset": found["dataset"],
        "labels": {str(i): name for i, name in enumerate(found["labels"])},
        "num_folds": NUM_FOLDS,
        "fold_seed": seed,
        "training": [serial(e) for e in training],
        "validation": [serial(e) for e in training if e["case"] in val_cases]
        + [serial(e) for e in found["validation"] if e["case"] not in {t["case"] for t in training}],
        "testing": [serial(e) for e in found["testing"]],
    }
    atomic_write_bytes(output, (json.dumps(datalist, indent=2) + "\n").encode())
    return output


@exit_on_input_error
def load_split(datalist: str | os.PathLike, fold: int = 0, part: str = "train") -> list[dict]:
    """
    Cases of one part of a prepared datalist, with absolute paths.

    Args:
        datalist: JSON written by :func:`prepare_dataset`.
        fold: 0..4 selects cross-validation fold ``fold`` (its cases validate, the others train); -1 selects the
            fixed split (``validation`` key: BTCV 24/6, AMOS imagesVa).
        part: ``"train"``, ``"val"`` or ``"test"``.
    """
    path = Path(datalist)
    if not path.is_file():
        raise DatasetError(f"datalist {path} does not exist; write it with tools/prepare_data.py.")
    if part not in ("train", "val", "test"):
        raise ValueError(f"part must be 'train', 'val' or 'test', got {part!r}.")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"datalist {path} is not valid JSON ({e}); fix the file or write it again with "
                           f"tools/prepare_data.py.") from e
    if not isinstance(content, dict) or not isinstance(content.get("training"), list):
        raise DatasetError(f"datalist {path} has no 'training' list; write it with tools/prepare_data.py.")
    if part == "test":
        return load_decathlon_datalist(str(path), True, "testing") if content.get("testing") else []
    training = load_decathlon_datalist(str(path), True, "training")
    if fold == -1:
        fixed = load_decathlon_datalist(str(path), True, "validation")
        if not fixed:
            raise DatasetError(f"{path} has no fixed validation split; choose a fold in 0..{NUM_FOLDS - 1}.")
        val_cases = {e["case"] for e in fixed}
        return fixed if part == "val" else [e for e in training if e["case"] not in val_cases]
    if not 0 <= fold < NUM_FOLDS:
        raise ValueError(f"fold must be -1 (fixed split) or in 0..{NUM_FOLDS - 1}, got {fold}.")
    return [e for e in training if (e["fold"] == fold) == (part == "val")]


def brats_image_lists(raw_dir: str | os.PathLike) -> list[list[str]]:
    """
    For inference: the 4 modality files (T1c, T1, T2, FLAIR) of every BraTS 2021 or 2023 case folder in
    ``raw_dir``; an empty list when there are none (the inference run then says so, naming the options).
    """
    raw = Path(raw_dir)
    for prepare in (_brats2021, _brats2023):
        try:
            return [[str(p) for p in case["image"]] for case in prepare(raw)["training"]]
        except DatasetError:
            continue
    return []
