"""Weights in bundle configs: a DDP-safe CPU checkpoint view, starting a sub-network from another checkpoint, the
networks of a fold ensemble."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from e2enet_monai.bundle.checks import check_checkpoint
from e2enet_monai.networks.utils import unwrap_parallel
from e2enet_monai.utils.errors import InputError, exit_on_input_error

__all__ = ["CPUStateDict", "fold_checkpoints", "load_ensemble", "load_weights"]


class CPUStateDict:
    """
    Checkpoint wrapper whose ``state_dict()`` is the network's, on CPU and unwrapped from DDP, so saved weights load
    anywhere (``{"model": state_dict}`` as the Model Zoo expects); ``load_state_dict`` loads into the network.
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = unwrap_parallel(network)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.network.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> object:
        return self.network.load_state_dict(state, strict=strict)


def load_weights(module: nn.Module, path: str | os.PathLike = "", key: str = "model", freeze: bool = False,
                 config_key: str = "path") -> nn.Module:
    """
    Load ``path`` (a bundle checkpoint ``{key: state_dict}`` or a bare state_dict) into ``module`` when ``path`` is
    not empty, optionally freeze it, and return it: lets a config start a sub-network (e.g. the local or global
    network of ``NMSWNet``) from another training's checkpoint. ``config_key`` names the config id that gave
    ``path``, for the error messages.
    """
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint {path} not found (config key {config_key}).")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt.get(key, ckpt) if isinstance(ckpt, dict) else ckpt
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint {path} (config key {config_key}) does not fit {type(module).__name__}: "
                             f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]} (check channels/strides).")
    if freeze:
        module.requires_grad_(False)
    return module


def fold_checkpoints(models_dir: str | os.PathLike, pattern: str, folds: Sequence[int]) -> list[Path]:
    """
    The checkpoint of each fold: ``models_dir / pattern.format(k)`` (e.g. ``model_fold{}.pt``).

    Raises:
        InputError: a repeated fold.
    """
    if len(set(int(k) for k in folds)) != len(folds):
        raise InputError(f"folds {list(folds)} repeats a fold: each fold checkpoint counts once in the average.")
    return [Path(models_dir) / pattern.format(int(k)) for k in folds]


@exit_on_input_error
def load_ensemble(network: nn.Module, models_dir: str | os.PathLike, pattern: str, folds: Sequence[int],
                  how_to_make: str = "") -> list[nn.Module] | None:
    """
    One copy of ``network`` per fold, loaded from :func:`fold_checkpoints` (each checked to exist and fit the
    network first) and put in eval mode, for :class:`~e2enet_monai.inferers.EnsembleInferer`; ``None`` when
    ``folds`` is empty (the bundle's single checkpoint is used).

    Raises:
        InputError: a repeated fold, or a fold checkpoint that is missing or does not fit (named).
    """
    if not folds:
        return None
    paths = fold_checkpoints(models_dir, pattern, folds)
    base = unwrap_parallel(network)
    for path in paths:
        check_checkpoint(path, base, how_to_make=how_to_make)
    members = []
    for path in paths:
        member = copy.deepcopy(base)
        state = torch.load(path, map_location="cpu", weights_only=True)
        member.load_state_dict(state.get("model", state) if isinstance(state, Mapping) else state)
        members.append(member.eval())
    return members
