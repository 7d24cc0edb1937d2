"""Helpers on torch modules."""

from __future__ import annotations

import torch.nn as nn

__all__ = ["unwrap_parallel"]


def unwrap_parallel(network: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` or ``DataParallel`` (their ``.module``); others as they are."""
    if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return network.module
    return network
