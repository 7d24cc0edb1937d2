"""
What ``e2enet-segment -i`` accepts, as cases: a NIfTI file, a folder of NIfTI files, a DICOM series folder, or (for
a multi-channel bundle such as BraTS) one file per channel, one 4-D NIfTI, or a folder of case folders each holding
one file per channel. Nothing is read here beyond DICOM headers; the images are checked when a case starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from e2enet_monai.utils.errors import InputError

__all__ = ["NIFTI_SUFFIXES", "Case", "DicomSeries", "case_name", "dicom_series", "find_cases"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series in a folder: its SeriesInstanceUID (see :func:`dicom_series`), description and slice files
    (sorted by name)."""

    uid: str
    description: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class Case:
    """
    One case to segment.

    Attributes:
        name: the case's output folder name.
        images: one NIfTI file, or one file per channel (in the bundle's channel order); empty for a DICOM case
            until it is converted.
        dicom: the DICOM series it comes from, if any.
    """

    name: str
    images: tuple[Path, ...]
    dicom: DicomSeries | None = None


def case_name(path: Path) -> str:
    """``ct.nii.gz`` -> ``ct``; a folder keeps its name."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith(NIFTI_SUFFIXES)


def _is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM`` (how pydicom and dcmtk recognise one)."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_series(folder: Path) -> list[DicomSeries]:
    """The DICOM series among the files of ``folder`` (not its subfolders), by SeriesInstanceUID (where a file has
    none, by series number, description and frame of reference, named ``no-uid:<number>/<description>/<frame>``)."""
    import pydicom

    found: dict[str, tuple[str, list[Path]]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and _is_dicom(p)):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as e:  # pydicom raises several types for a damaged header
            raise InputError(f"DICOM file {path} cannot be read ({type(e).__name__}: {e}).") from e
        uid = str(header.get("SeriesInstanceUID", "") or "")
        if not uid:  # anonymised files may lack it: series number, description and frame of reference instead
            uid = "no-uid:" + "/".join(str(header.get(k, "") or "") for k in
                                       ("SeriesNumber", "SeriesDescription", "FrameOfReferenceUID"))
        found.setdefault(uid, (str(header.get("SeriesDescription", "")), []))[1].append(path)
    return [DicomSeries(uid, desc, tuple(files)) for uid, (desc, files) in found.items()]


def _choose_series(folder: Path, series: list[DicomSeries], series_uid: str | None) -> DicomSeries:
    listing = "; ".join(f"{s.uid} ({s.description or 'no description'}, {len(s.files)} files)" for s in series)
    if series_uid is not None:
        chosen = [s for s in series if s.uid == series_uid]
        if not chosen:
            raise InputError(f"{folder} has no DICOM series {series_uid}; it has: {listing}.")
        return chosen[0]
    if len(series) > 1:
        raise InputError(f"{folder} holds {len(series)} DICOM series: {listing}. Choose one with --series_uid UID.")
    return series[0]


def _folder_cases(folder: Path, in_channels: int, series_uid: str | None) -> list[Case]:
    series = dicom_series(folder)
    if series:
        chosen = _choose_series(folder, series, series_uid)
        return [Case(folder.name, (), chosen)]
    files = sorted(p for p in folder.iterdir() if _is_nifti(p))
    if files and (in_channels == 1 or len(files) != in_channels):
        return [Case(case_name(p), (p,)) for p in files]
    if files:  # exactly in_channels files: the channels of one case (a BraTS case folder)
        return [Case(folder.name, tuple(_channel_order(files)))]
    subfolders = [d for d in sorted(folder.iterdir()) if d.is_dir()]
    cases = []
    for sub in subfolders:  # BraTS case folders: their label file (``*_seg``, ``*-seg``) is not an input
        inner = sorted(p for p in sub.iterdir() if _is_nifti(p) and not case_name(p).lower().endswith(_LABELS))
        if inner:
            cases += [Case(sub.name, tuple(_channel_order(inner)))] if len(inner) == in_channels else \
                [Case(case_name(p), (p,)) for p in inner]
    if not cases:
        raise InputError(f"no image found in {folder}: expected NIfTI files (*.nii.gz, *.nii), a DICOM series, or "
                         f"case folders holding {in_channels} NIfTI file(s) each.")
    return cases


_LABELS = ("_seg", "-seg")
# BraTS file name endings, in the bundles' channel order (T1c, T1, T2, FLAIR; metadata.json channel_def)
_BRATS_ORDER = (("t1ce", "t1c"), ("t1", "t1n"), ("t2", "t2w"), ("flair", "t2f"))


def _channel_order(files: Sequence[Path]) -> list[Path]:
    """Per-channel files in the bundle's order when they carry BraTS 2021/2023 modality names, else by name."""
    if len(files) != len(_BRATS_ORDER):
        return list(files)
    ordered = []
    for endings in _BRATS_ORDER:
        match = [p for p in files if case_name(p).lower().rsplit("-", 1)[-1].rsplit("_", 1)[-1] in endings]
        if len(match) != 1:
            return list(files)
        ordered.append(match[0])
    return ordered


def _common_name(files: Sequence[Path]) -> str:
    names = [case_name(p) for p in files]
    prefix = os.path.commonprefix(names).rstrip("_-.")
    return prefix or names[0]


def find_cases(inputs: Sequence[str | os.PathLike], in_channels: int = 1, series_uid: str | None = None) -> list[Case]:
    """
    The cases of ``-i``: see the module docstring. ``in_channels`` files given together are the channels of one
    case (BraTS: T1c, T1, T2 and FLAIR, ordered by their BraTS names when they have them, otherwise as given).

    Raises:
        InputError: nothing given, a path that does not exist or is neither NIfTI nor a folder, a folder with no
            image, or a folder of several DICOM series without ``series_uid`` (they are listed).
    """
    paths = [Path(p).expanduser() for p in inputs]
    if not paths:
        raise InputError("no input given: pass -i with a NIfTI file, a folder of them, or a DICOM series folder.")
    for path in paths:
        if not path.exists():
            raise InputError(f"input {path} does not exist.")
        if path.is_file() and not _is_nifti(path) and not _is_dicom(path):
            raise InputError(f"input {path} is neither a NIfTI file (.nii.gz, .nii) nor a folder; give a DICOM "
                             f"series as its folder.")
    if in_channels > 1 and len(paths) == in_channels and all(_is_nifti(p) for p in paths):
        return [Case(_common_name(paths), tuple(_channel_order(paths)))]
    cases: list[Case] = []
    for path in paths:
        if path.is_dir():
            cases += _folder_cases(path, in_channels, series_uid)
        elif _is_dicom(path):
            cases += _folder_cases(path.parent, in_channels, series_uid)
        else:
            cases.append(Case(case_name(path), (path,)))
    names = [c.name for c in cases]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"several inputs would write the same output folder(s) {twice}: give them in separate runs "
                         f"or rename them.")
    return cases
