"""
Which bundle ``e2enet-segment --bundle`` runs: a bundle folder with trained weights, or a shipped bundle's name
resolved to a downloaded copy (from the local cache, or through a bundle index with its sha256 checked).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from e2enet_monai.bundle.registry import SHIPPED_BUNDLES
from e2enet_monai.bundle.weights import fold_checkpoints
from e2enet_monai.release import BundleDownloadError, download
from e2enet_monai.utils.errors import InputError

__all__ = ["CACHE_ENV", "BundleSource", "default_cache", "resolve_bundle"]

CACHE_ENV = "E2ENET_MONAI_CACHE"


def default_cache() -> Path:
    """Where downloaded bundles are kept: ``$E2ENET_MONAI_CACHE/bundles``, else ``~/.cache/e2enet-monai/bundles``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "e2enet-monai") / "bundles"


@dataclass(frozen=True)
class BundleSource:
    """
    A bundle ready to run.

    Attributes:
        folder: the bundle folder (``configs/``, ``models/``).
        metadata: its ``configs/metadata.json``.
        in_channels: input channels of its network.
        spacing: the resampling spacing of its inference (mm), as ``inference.json`` sets it.
        patch_size: its network patch (voxels), as ``inference.json`` sets it.
    """

    folder: Path
    metadata: dict
    in_channels: int
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]

    def configs(self, fast: bool) -> list[str]:
        """The inference config files: ``inference.json``, plus ``inference_topk.json`` for top-k (``fast``)."""
        names = ["inference.json", "inference_topk.json"] if fast else ["inference.json"]
        return [str(self.folder / "configs" / n) for n in names]

    def config_value(self, key: str, fast: bool) -> object:
        """A top-level id of the inference configs (``inference_topk.json`` wins with ``fast``), or ``None``."""
        value = None
        for file in self.configs(fast):
            value = json.loads(Path(file).read_text()).get(key, value)
        return value

    def weights(self, fast: bool, folds: Sequence[int] = ()) -> list[Path]:
        """The checkpoints inference loads: the bundle's one, or one per fold of a fold ensemble."""
        if folds:
            return fold_checkpoints(self.folder / "models", str(self.config_value("fold_checkpoint", fast)), folds)
        return [self.folder / "models" / ("model_topk.pt" if fast else "model.pt")]


def _load(folder: Path, fast: bool, how: str, tta: bool = False, folds: Sequence[int] = ()) -> BundleSource:
    meta_file = folder / "configs" / "metadata.json"
    if not (folder / "configs" / "inference.json").is_file() or not meta_file.is_file():
        raise InputError(f"{folder} is not a bundle folder: configs/inference.json and configs/metadata.json "
                         f"expected.")
    metadata = json.loads(meta_file.read_text())
    config = json.loads((folder / "configs" / "inference.json").read_text())
    source = BundleSource(folder, metadata, int(metadata["network_data_format"]["inputs"]["image"]["num_channels"]),
                          tuple(float(v) for v in config["spacing"]), tuple(int(v) for v in config["patch_size"]))
    for option, key, wanted in (("--tta", "tta", tta), ("--folds", "folds", folds)):
        if wanted and key not in config:
            raise InputError(f"{option}: the bundle in {folder} (version {metadata.get('version', '?')}) has no "
                             f"'{key}' inference config id; it predates e2enet-monai 0.8.0's bundles.")
    mode = "top-k (--fast)" if fast else "sliding-window"
    for weights in source.weights(fast, folds):
        if not weights.is_file():
            if folds:
                raise InputError(f"{folder} has no {mode} weights {weights.relative_to(folder)} for --folds; train "
                                 f"each fold with train.json --fold <k> (the bundle's docs/README.md).")
            raise InputError(f"{folder} has no {mode} weights {weights.relative_to(folder)}. {how}")
    return source


def resolve_bundle(bundle: str, fast: bool = False, index_url: str | None = None,
                   cache: str | os.PathLike | None = None, tta: bool = False,
                   folds: Sequence[int] = ()) -> BundleSource:
    """
    ``bundle`` is a bundle folder, or a shipped bundle's name (``btcv``, ``amos``, ``brats``; or its folder name)
    found in ``cache`` (default :func:`default_cache`) or, if not there and ``index_url`` is given, downloaded into
    it through that index (size and sha256 checked before anything is extracted).

    ``tta`` and ``folds`` (mirror averaging, a fold ensemble) need the bundle's ``tta`` and ``folds`` config ids
    and, for ``folds``, each fold's checkpoint.

    Raises:
        InputError: an unknown name, a name with no copy and no ``index_url``, a failed download, or a bundle
            without the weights or config ids the options need (each says what to do).
    """
    path = Path(bundle).expanduser()
    if path.is_dir():
        return _load(path.resolve(), fast, "Train it (its docs/README.md), or give a bundle folder that has them.",
                     tta, folds)
    names = {info.folder: info.folder for info in SHIPPED_BUNDLES.values()}
    names.update({key: info.folder for key, info in SHIPPED_BUNDLES.items()})
    if bundle not in names:
        raise InputError(f"--bundle {bundle!r} is neither a bundle folder nor a shipped bundle; choose from "
                         f"{sorted(SHIPPED_BUNDLES)} or give a folder.")
    folder = names[bundle]
    root = Path(cache).expanduser() if cache is not None else default_cache()
    local = root / folder
    if not local.is_dir():
        if not index_url:
            raise InputError(f"no downloaded copy of {folder} in {root}: pass --index_url <bundle index URL> to "
                             f"download it, or --bundle <a trained bundle folder> (the demo's, for example).")
        try:
            local = download(folder, index_url=index_url, bundle_dir=root)
        except (BundleDownloadError, ValueError) as e:
            raise InputError(f"downloading {folder} from {index_url} failed: {e}") from e
    return _load(local, fast, f"Download a release that has them: delete {local} and pass --index_url.", tta, folds)
