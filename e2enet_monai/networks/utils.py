"""Helpers on torch modules."""

from __future__ import annotations

import torch.nn as nn

from e2enet_monai.networks.blocks.narrow_conv import NarrowConv3d
from e2enet_monai.networks.blocks.nnpack_conv import check_nnpack_mode

__all__ = ["set_nnpack", "unwrap_parallel"]


def set_nnpack(network: nn.Module, mode: str) -> nn.Module:
    """
    Set when every :class:`~e2enet_monai.networks.blocks.NarrowConv3d` of ``network`` (E2ENet's convolutions) runs
    its depth-folded inference through NNPACK: ``"auto"`` (the default), ``"on"`` or ``"off"`` (see
    ``nnpack_conv.use_nnpack``). Returns ``network``.
    """
    check_nnpack_mode(mode)
    for module in network.modules():
        if isinstance(module, NarrowConv3d):
            module.nnpack = mode
    return network


def unwrap_parallel(network: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` or ``DataParallel`` (their ``.module``); others as they are."""
    if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return network.module
    return network
