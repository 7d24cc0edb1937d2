"""Compaction of a channel-sparse E2ENet mesh into smaller dense convolutions, and its checkpoint format."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from e2enet_monai.networks import E2ENet
from e2enet_monai.networks.blocks import ShiftConvBlock
from e2enet_monai.sparse.masks import KernelMasks
from e2enet_monai.utils.io import atomic_torch_save

__all__ = ["compact_model", "load_compact_checkpoint", "save_compact_checkpoint"]

_FORMAT = "e2enet-monai/compact/1"
_CONV = ".conv.conv.weight"  # a ShiftConvBlock's convolution weight, relative to the block


def compact_model(model: E2ENet, masks: KernelMasks | None = None) -> dict[str, list[int]]:
    """
    Drop, in place, the input channels of every mesh fusion convolution that no active kernel reads, so a mesh
    trained with ``structure="channel"`` runs as smaller dense convolutions with the same output. The masks are
    applied first (weights outside them become zero). With kernel-structured masks only the channels with no active
    kernel at all are dropped (few at density 0.2). The transposed convolutions keep their input channels (their
    pruned rows stay zero) and compute only the output channels that are read.

    Args:
        model: an :class:`~e2enet_monai.networks.E2ENet`, not compacted yet.
        masks: the sparse masks (e.g. ``DynamicSparsity.masks``); default: read off the weights (a kernel is
            active when any of its weights is non-zero).

    Returns:
        block name -> kept input channels, as :meth:`E2ENet.compact` takes them (what
        :func:`save_compact_checkpoint` stores).
    """
    if not isinstance(model, E2ENet):
        raise TypeError(f"compact_model needs an E2ENet, got {type(model).__name__}.")
    masks = masks if masks is not None else KernelMasks.from_weights(model, model.mesh_parameter_names())
    masks.apply(model)
    blocks = dict(model.named_modules())
    keep: dict[str, list[int]] = {}
    for name, mask in masks.masks.items():
        block_name = name[: -len(_CONV)]
        if not name.endswith(_CONV) or not isinstance(blocks.get(block_name), ShiftConvBlock):
            continue
        used = mask.any(dim=0).nonzero().flatten().tolist()  # (out, in) mask: input channels read by some kernel
        if len(used) < mask.shape[1]:
            keep[block_name] = used or [0]  # a block needs one input; its weights are zero anyway
    model.compact(keep)
    return keep


def save_compact_checkpoint(model: E2ENet, path: str | os.PathLike) -> Path:
    """Write a compacted model's state dict with the channels it keeps (``{"format", "compact", "model"}``)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save({"format": _FORMAT, "compact": model.compacted_channels(), "model": state}, path)


def load_compact_checkpoint(model: E2ENet, path: str | os.PathLike) -> E2ENet:
    """Compact a freshly built ``model`` the way the checkpoint at ``path`` was, then load its weights."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a compact E2ENet checkpoint (format {_FORMAT!r}); compact one with "
                         f"e2enet_monai.sparse.compact_model and save_compact_checkpoint.")
    model.compact(data["compact"])
    model.load_state_dict(data["model"])
    return model
