"""The optimizers the bundles' train configs choose from by name."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["make_optimizer"]


def make_optimizer(params: Iterable[torch.nn.Parameter], name: str = "sgd", lr: float = 0.01,
                   weight_decay: float = 3e-5) -> torch.optim.Optimizer:
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
