"""Compact checkpoints of kernel-sparse weights: only active kernels plus one bit per kernel."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from e2enet_monai.utils.io import atomic_torch_save

__all__ = ["load_sparse_state_dict", "save_sparse_state_dict"]

_FORMAT = "e2enet-monai/kernel-sparse/1"


def save_sparse_state_dict(
    state_dict: Mapping[str, torch.Tensor], sparse_names: list[str], path: str | os.PathLike
) -> Path:
    """
    Write ``state_dict`` with each tensor of ``sparse_names`` stored as its active kernels (those with any
    non-zero weight) and a bit-packed kernel mask; every other tensor is stored as is. The file size is about
    proportional to the density of the sparse tensors. Written atomically.
    """
    dense, sparse = {}, {}
    missing = [n for n in sparse_names if n not in state_dict]
    if missing:
        raise KeyError(f"sparse tensors {missing} are not in the state_dict.")
    for name, value in state_dict.items():
        if name not in sparse_names:
            dense[name] = value.detach().cpu()
            continue
        value = value.detach().cpu()
        kernels = value.flatten(2)  # (a, b, k)
        mask = kernels.ne(0).any(dim=2)
        sparse[name] = {
            "shape": list(value.shape),
            "bits": torch.from_numpy(np.packbits(mask.flatten().numpy())),
            "values": kernels[mask].clone(),  # (active, k)
        }
    return atomic_torch_save({"format": _FORMAT, "dense": dense, "sparse": sparse}, path)


def load_sparse_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a file of :func:`save_sparse_state_dict` back into an ordinary dense state_dict."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a kernel-sparse checkpoint (format {_FORMAT!r}).")
    out = dict(data["dense"])
    for name, entry in data["sparse"].items():
        shape = entry["shape"]
        count = shape[0] * shape[1]
        mask = torch.from_numpy(np.unpackbits(entry["bits"].numpy())[:count].astype(bool)).view(shape[0], shape[1])
        kernels = torch.zeros(shape[0], shape[1], int(np.prod(shape[2:])), dtype=entry["values"].dtype)
        kernels[mask] = entry["values"]
        out[name] = kernels.view(shape)
    return out
