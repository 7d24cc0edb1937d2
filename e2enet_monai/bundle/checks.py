"""
Checks the bundles' configs run before any long work (``initialize`` of training, the first ``run`` step of
inference), each ending a ``monai.bundle run`` with one clear line on failure (:func:`exit_on_input_error`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import FolderLayout

from e2enet_monai.data.checks import check_image, check_label
from e2enet_monai.inferers.ensemble import mirror_axes_problem
from e2enet_monai.sparse.settings import sparse_setting_problems
from e2enet_monai.utils.errors import InputError, exit_on_input_error
from e2enet_monai.utils.values import is_real, is_whole

__all__ = ["WEIGHTS_CONFIGS", "check_checkpoint", "check_inference_run", "check_spatial_ids", "check_sparse_training",
           "check_training_run", "check_weights_fit_configs", "inference_items", "output_path"]


def inference_items(datalist: str | os.PathLike | Sequence[str | os.PathLike | Sequence[str]]) -> list[dict]:
    """
    ``[{"image": path}, ...]`` from a path or a list of paths (a case may be the list of its per-channel files).
    Nothing is read: :func:`check_inference_run` checks the files when the run starts, so a workflow can be built
    (MONAI's and the Model Zoo's property checks) with the bundle's default, possibly empty, datalist.
    """
    items = [datalist] if isinstance(datalist, (str, os.PathLike)) else list(datalist)
    return [{"image": str(item) if isinstance(item, (str, os.PathLike)) else [str(f) for f in item]} for item in items]


def output_path(image: str | Sequence[str], output_dir: str | os.PathLike, postfix: str = "seg") -> Path:
    """Where inference writes the label map of ``image``: ``<output_dir>/<case>/<case>_<postfix>.nii.gz``."""
    source = image if isinstance(image, str) else image[0]
    layout = FolderLayout(output_dir=str(output_dir), postfix=postfix, extension=".nii.gz", parent=True)
    return Path(layout.filename(subject=source))


@exit_on_input_error
def check_inference_run(datalist: str | os.PathLike | Sequence, output_dir: str | os.PathLike, overwrite: bool,
                        in_channels: int, spacing: Sequence[float], patch_size: Sequence[int],
                        postfix: str = "seg") -> None:
    """
    Before inference: the datalist is not empty; every image passes :func:`~e2enet_monai.data.checks.check_image`
    (readable, 3-D, ``in_channels`` channels, finite, not constant, at least one patch after resampling); and, unless
    ``overwrite``, no output exists yet (all are listed, so a user learns of them now, not after the first case).
    """
    items = inference_items(datalist)
    if not items:
        raise InputError("the inference datalist is empty: pass --datalist \"['/path/to/image.nii.gz']\" or set "
                         "--dataset_dir to a folder with images.")
    for item in items:
        check_image(item["image"], in_channels=in_channels, spacing=spacing, patch_size=patch_size)
    if not overwrite:
        existing = [p for p in (output_path(i["image"], output_dir, postfix) for i in items) if p.exists()]
        if existing:
            more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
            raise InputError(f"{', '.join(map(str, existing[:3]))}{more} already exist(s); choose another "
                             f"--output_dir or pass --overwrite True to replace them.")


@exit_on_input_error
def check_checkpoint(checkpoint: str | os.PathLike, network: torch.nn.Module, key: str = "model",
                     how_to_make: str = "") -> None:
    """
    The weights exist and fit the network the configs build: every tensor name and shape. A mismatch (a bundle's
    configs changed, or weights trained with other ``channels`` / ``strides``) is named with up to three tensors.

    Args:
        checkpoint: the weights file (``{key: state_dict}`` or a bare state_dict).
        network: the network the configs build.
        key: key of the state dict in the checkpoint.
        how_to_make: the command that writes ``checkpoint``, for the message when it is missing.
    """
    path = Path(checkpoint)
    if not path.is_file():
        hint = f" Make it with: {how_to_make}" if how_to_make else " Train the bundle or download released weights."
        raise InputError(f"weights {path} not found.{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"weights {path} cannot be read ({type(e).__name__}: {e}).") from e
    state = ckpt.get(key, ckpt) if isinstance(ckpt, Mapping) else ckpt
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    problems = [f"{k}: {found[k]} in the weights, {shape} in the configs" for k, shape in expected.items()
                if k in found and found[k] != shape]
    problems += [f"{k}: in the configs, not in the weights" for k in expected if k not in found]
    problems += [f"{k}: in the weights, not in the configs" for k in found if k not in expected]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InputError(f"weights {path} do not fit the network the configs build ({type(network).__name__}): "
                         f"{'; '.join(problems[:3])}{more}. Set the network's config ids (channels, strides, ...) "
                         f"to the values it was trained with; a bundle trained by tools/demo.py has them in its "
                         f"configs.")


@exit_on_input_error
def check_training_run(train_data: Sequence[Mapping], val_data: Sequence[Mapping], in_channels: int,
                       label_values: Sequence[int], best_model: str | os.PathLike, overwrite: bool = False,
                       resume_from: str | os.PathLike = "") -> None:
    """
    Before training (and before the datasets cache anything): a resume checkpoint that exists; no existing
    ``best_model`` replaced unless ``overwrite`` (or when resuming, which continues the run that wrote it); training
    and validation cases (without validation nothing would be saved); every case's image passes
    :func:`~e2enet_monai.data.checks.check_image` and its label :func:`~e2enet_monai.data.checks.check_label`.
    """
    if resume_from and not Path(resume_from).is_file():
        raise InputError(f"--resume_from {resume_from}: no such checkpoint (bundles write "
                         f"models/last_checkpoint_epoch=<N>.pt with --save_last True).")
    best = Path(best_model)
    if best.exists() and not overwrite and not resume_from:
        raise InputError(f"{best} exists (an earlier training's best model); pass --overwrite True to replace it, "
                         f"--resume_from <last checkpoint> to continue that training, or --ckpt_dir <folder> to "
                         f"train into another folder.")
    if not train_data:
        raise InputError("no training cases: check --dataset_dir, its datalist.json and --fold.")
    if not val_data:
        raise InputError("no validation cases, so no best model would ever be saved: choose a --fold that has "
                         "validation cases (tools/prepare_data.py writes 5 folds).")
    for case in [*train_data, *val_data]:
        image = case["image"]
        check_image(image, in_channels=in_channels)
        if "label" not in case:
            raise InputError(f"training case {image} has no 'label' in the datalist.")
        check_label(case["label"], image if isinstance(image, str) else image[0], label_values)


def _positive(values: object, count: int, whole: bool) -> bool:
    number = is_whole if whole else is_real
    return (isinstance(values, Sequence) and not isinstance(values, str) and len(values) == count
            and all(number(v) and v > 0 for v in values))


@exit_on_input_error
def check_spatial_ids(spacing: Sequence[float], patch_size: Sequence[int], mirror_axes: Sequence[int] = ()) -> None:
    """
    At start-up, before weights or data are read: ``spacing`` is 3 numbers > 0 (mm), ``patch_size`` 3 whole numbers
    >= 1 (voxels) and ``mirror_axes`` (the configs pass them only with ``tta``) distinct axes out of 0, 1, 2. Every
    wrong id is named with what it holds; a 2-value ``patch_size`` would otherwise fail deep in the sliding window.
    """
    problems = []
    if not _positive(spacing, 3, whole=False):
        problems.append(f"--spacing must be 3 numbers > 0 (mm per voxel), got {spacing!r}")
    if not _positive(patch_size, 3, whole=True):
        problems.append(f"--patch_size must be 3 whole numbers > 0 (voxels), got {patch_size!r}")
    mirror = mirror_axes_problem(mirror_axes)
    if mirror:
        problems.append(f"--mirror_axes {mirror}")
    if problems:
        raise InputError("; ".join(problems) + ".")


@exit_on_input_error
def check_sparse_training(enabled: bool, density: float, distribution: str, growth: str, death_rate: float,
                          update_frequency: int, structure: str, channel_multiple: int) -> None:
    """
    Before training, when ``sparse_training`` is on: the bundle's ``sparse_*`` ids hold values the sparse-training
    handler accepts (:func:`~e2enet_monai.sparse.sparse_setting_problems`). Every wrong one is named by its id, what
    it accepts and what it holds, before any data is read (the handler itself would fail later, inside MONAI's
    ``Failed to instantiate component``).
    """
    if not enabled:
        return
    problems = sparse_setting_problems(density=density, distribution=distribution, growth=growth,
                                       death_rate=death_rate, update_frequency=update_frequency,
                                       structure=structure, channel_multiple=channel_multiple)
    if problems:
        raise InputError(f"{'; '.join(f'--sparse_{k} {v}' for k, v in problems.items())}. See the sparse_* ids in "
                         f"the bundle's docs/README.md.")


# weights file -> the configs that must rebuild its network
WEIGHTS_CONFIGS = {
    "models/model.pt": ["inference.json"],
    "models/model_topk.pt": ["inference.json", "inference_topk.json"],
}


def check_weights_fit_configs(bundle: str | os.PathLike) -> list[str]:
    """
    Every weights file of :data:`WEIGHTS_CONFIGS` present in ``bundle`` loads into the network its own configs
    build (names and shapes), as ``monai.bundle run`` will build it with no overrides; raise
    :class:`~e2enet_monai.utils.errors.InputError` naming the mismatch otherwise. Returns the checked files.
    """
    root = Path(bundle)
    checked = []
    for rel, configs in WEIGHTS_CONFIGS.items():
        if not (root / rel).is_file() or not all((root / "configs" / c).is_file() for c in configs):
            continue
        parser = ConfigParser()
        parser.read_config([str(root / "configs" / c) for c in configs])
        parser["bundle_root"] = str(root)
        check_checkpoint(root / rel, parser.get_parsed_content("network_def"))
        checked.append(rel)
    return checked
