"""The optimizers the bundles' train configs choose from by name."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from e2enet_monai.utils.errors import InputError, exit_on_input_error
from e2enet_monai.utils.values import is_real

__all__ = ["OPTIMIZERS", "make_optimizer"]

OPTIMIZERS = ("sgd", "adamw")


@exit_on_input_error
def make_optimizer(params: Iterable[torch.nn.Parameter], name: str = "sgd", lr: float = 0.01,
                   weight_decay: float = 3e-5) -> torch.optim.Optimizer:
    """
    ``"sgd"``: the E2ENet/nnU-Net recipe, SGD with Nesterov momentum 0.99 (for long GPU training).
    ``"adamw"``: AdamW, which converges in far fewer iterations (used for short CPU runs and the demo).
    Parameters with ``requires_grad=False`` are left out. A wrong name or learning rate raises an
    :class:`~e2enet_monai.utils.errors.InputError` naming the bundle id (``--optimizer_name``, ``--learning_rate``).
    """
    if name not in OPTIMIZERS:
        raise InputError(f"--optimizer_name must be one of {OPTIMIZERS}, got {name!r}.")
    if not (is_real(lr) and lr > 0):
        raise InputError(f"--learning_rate must be a number > 0, got {lr!r}.")
    params = [p for p in params if p.requires_grad]  # frozen sub-networks (e.g. a pretrained local net) stay out
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
