"""Write a compact checkpoint of a sparse-trained bundle model (active kernels + mask bits) or read one back."""

from __future__ import annotations

import os
from pathlib import Path

import fire
import torch

from e2enet_monai.sparse import load_sparse_state_dict, save_sparse_state_dict
from e2enet_monai.utils.io import atomic_torch_save


def export(checkpoint: str, output: str, overwrite: bool = False) -> None:
    """
    Compact a checkpoint ({"model": state_dict, "sparse": {"masks": ...}} as the bundles save it).

    Args:
        checkpoint: a bundle's models/model.pt (or any file with "model" and "sparse" keys).
        output: path of the compact file.
        overwrite: replace an existing output.
    """
    if Path(output).exists() and not overwrite:
        raise SystemExit(f"{output} exists; pass --overwrite to replace it.")
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if "sparse" not in ckpt or not ckpt["sparse"]:
        raise SystemExit(f"{checkpoint} has no sparse masks (trained dense?); nothing to compact.")
    path = save_sparse_state_dict(ckpt["model"], list(ckpt["sparse"]["masks"]), output)
    dense, compact = os.path.getsize(checkpoint), path.stat().st_size
    print(f"wrote {path}: {compact / 2**20:.2f} MiB vs {dense / 2**20:.2f} MiB dense ({compact / dense:.1%})")


def restore(compact: str, output: str, overwrite: bool = False) -> None:
    """
    Turn a compact file back into an ordinary {"model": state_dict} checkpoint that bundles load.

    Args:
        compact: a file written by `export`.
        output: path of the dense checkpoint (e.g. a bundle's models/model.pt).
        overwrite: replace an existing output.
    """
    if Path(output).exists() and not overwrite:
        raise SystemExit(f"{output} exists; pass --overwrite to replace it.")
    atomic_torch_save({"model": load_sparse_state_dict(compact)}, output)
    print(f"wrote {output}")


if __name__ == "__main__":
    fire.Fire({"export": export, "restore": restore})
