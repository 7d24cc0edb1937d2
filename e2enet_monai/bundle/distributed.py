"""Process-group teardown for the multi-GPU configs (torchrun; NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["shutdown_distributed"]


def shutdown_distributed() -> None:
    """
    Wait for every rank, then destroy the default process group.

    Without the barrier a rank that finishes early (rank > 0 does not save checkpoints) tears its process group down
    while rank 0 is still working; with gloo its exit can then abort (SIGABRT) and torchrun kills the whole job.
    Does nothing when no process group is initialised.
    """
    if not dist.is_available() or not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()
