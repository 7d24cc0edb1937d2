"""
The bundles this project ships, and where to find their folders: a source checkout's ``bundles/``, or the copy
``pip install`` puts under ``<prefix>/share/e2enet-monai/bundles`` (declared as data files in ``setup.cfg``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from e2enet_monai.utils.errors import InputError

__all__ = ["BUNDLES_ENV", "SHIPPED_BUNDLES", "BundleInfo", "bundle_path", "bundles_dir"]

BUNDLES_ENV = "E2ENET_MONAI_BUNDLES"
_INSTALLED = "share/e2enet-monai/bundles"


@dataclass(frozen=True)
class BundleInfo:
    """
    A shipped bundle.

    Attributes:
        folder: the bundle's folder name (its Model Zoo name).
        dataset: the raw layout it trains from (``e2enet_monai.data.prepare_dataset`` kind).
        test_glob: its held-out images relative to the raw folder (``None``: BraTS, four files per case).
    """

    folder: str
    dataset: str
    test_glob: str | None


SHIPPED_BUNDLES: dict[str, BundleInfo] = {
    "btcv": BundleInfo("e2enet_btcv_segmentation", "btcv", "RawData/Testing/img/*.nii.gz"),
    "amos": BundleInfo("e2enet_amos_ct_segmentation", "amos", "amos22/imagesTs/*.nii.gz"),
    "brats": BundleInfo("e2enet_brats_segmentation", "brats2021", None),
}


def _has_bundles(folder: Path) -> bool:
    return all((folder / info.folder / "configs").is_dir() for info in SHIPPED_BUNDLES.values())


def _installed_dir() -> Path | None:
    """``share/e2enet-monai/bundles`` of the installed distribution, from its file record."""
    try:
        dist = metadata.distribution("e2enet-monai")
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        posix = f.as_posix()
        if _INSTALLED in posix and posix.endswith("/configs/metadata.json"):
            return Path(dist.locate_file(f)).resolve().parents[2]
    return None


def bundles_dir(folder: str | os.PathLike | None = None) -> Path:
    """
    The folder holding the shipped bundles: ``folder`` if given, else ``$E2ENET_MONAI_BUNDLES``, else the source
    checkout's ``bundles/`` (clone or ``pip install -e``), else the installed copy (``pip install .``).
    """
    if folder is not None or os.environ.get(BUNDLES_ENV):
        given = Path(folder if folder is not None else os.environ[BUNDLES_ENV]).expanduser().resolve()
        if not _has_bundles(given):
            raise InputError(f"{given} does not hold the bundles {[i.folder for i in SHIPPED_BUNDLES.values()]} "
                             f"(each with a configs/ folder); give the repository's bundles/ folder.")
        return given
    candidates = [Path(__file__).resolve().parents[2] / "bundles", _installed_dir()]
    for candidate in candidates:
        if candidate is not None and _has_bundles(candidate):
            return candidate
    raise InputError(f"the shipped bundles were not found (looked in {[str(c) for c in candidates if c]}); "
                     f"reinstall e2enet-monai, or pass the bundles folder (--bundles_dir, or ${BUNDLES_ENV}).")


def bundle_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    """The folder of shipped bundle ``name`` (``btcv``, ``amos`` or ``brats``) under :func:`bundles_dir`."""
    if name not in SHIPPED_BUNDLES:
        raise InputError(f"unknown bundle {name!r}; choose from {sorted(SHIPPED_BUNDLES)}.")
    return bundles_dir(folder) / SHIPPED_BUNDLES[name].folder
