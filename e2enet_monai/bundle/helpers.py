"""Small pieces bundle configs reference instead of embedding logic in ``$`` expressions."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn
from monai.transforms import Activationsd, AsDiscreted, Compose

from e2enet_monai.transforms.post import ArgMaxd

__all__ = ["CPUStateDict", "existing", "load_weights", "make_optimizer", "onehot_postprocessing",
           "region_postprocessing"]


def onehot_postprocessing(num_classes: int) -> Compose:
    """Validation post-processing of softmax models: argmax prediction and label, both one-hot (for MeanDice)."""
    return Compose([
        ArgMaxd(keys="pred"),
        AsDiscreted(keys="pred", to_onehot=num_classes),
        AsDiscreted(keys="label", to_onehot=num_classes),
    ])


def region_postprocessing() -> Compose:
    """Validation post-processing of sigmoid region models (BraTS): sigmoid then threshold at 0.5."""
    return Compose([Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5)])


class CPUStateDict:
    """
    Checkpoint wrapper whose ``state_dict()`` is the network's, on CPU and unwrapped from DDP, so saved weights load
    anywhere (``{"model": state_dict}`` as the Model Zoo expects); ``load_state_dict`` loads into the network.
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = network.module if hasattr(network, "module") else network

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.network.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True):
        return self.network.load_state_dict(state, strict=strict)


def make_optimizer(params, name: str = "sgd", lr: float = 0.01, weight_decay: float = 3e-5) -> torch.optim.Optimizer:
    """
    ``"sgd"``: the E2ENet/nnU-Net recipe, SGD with Nesterov momentum 0.99 (for long GPU training).
    ``"adamw"``: AdamW, which converges in far fewer iterations (used for short CPU runs and the demo).
    Parameters with ``requires_grad=False`` are left out.
    """
    params = [p for p in params if p.requires_grad]  # frozen sub-networks (e.g. a pretrained local net) stay out
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}.")


def existing(obj):
    """Return ``obj``: lets a config list an object defined elsewhere (``{"_target_": "...existing", "obj": "@id"}``)
    while every list item stays a ``_target_`` dict, which MONAI's property checks and MONAI Label expect."""
    return obj


def load_weights(module: torch.nn.Module, path: str | os.PathLike = "", key: str = "model", freeze: bool = False,
                 config_key: str = "path"):
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
