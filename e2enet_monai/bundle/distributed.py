"""Process-group teardown for the multi-GPU configs (torchrun; NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import torch.distributed as dist

__all__ = ["shutdown_distributed"]


def _wait_until_every_rank_tore_down(world_size: int, timeout: float = 300.0) -> None:
    """
    Under torchrun (whose agent keeps the rendezvous store up until every worker has exited), count this rank in
    a store key and wait until all ranks are: no rank exits while another still holds its gloo connections.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return  # another launcher: the store may live in rank 0 and be gone with its process group
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=timedelta(seconds=timeout))
    key = (f"e2enet_monai/torn_down/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/"
           f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}")
    store.add(key, 1)
    deadline = time.monotonic() + timeout
    while store.add(key, 0) < world_size and time.monotonic() < deadline:
        time.sleep(0.01)


def shutdown_distributed() -> None:
    """
    Wait for every rank, destroy the default process group, then (under torchrun) wait until every rank has
    destroyed its own.

    Without the barrier a rank that finishes early (rank > 0 does not save checkpoints) tears its process group down
    while rank 0 is still working; with gloo its exit can then abort (SIGABRT) and torchrun kills the whole job. The
    barrier alone leaves a shorter window: a rank that exits right after its teardown while a slower rank has not
    yet torn its own down (a loaded machine) aborts that rank the same way; hence the count after the teardown.
    Does nothing when no process group is initialised.
    """
    if not dist.is_available() or not dist.is_initialized():
        return
    dist.barrier()
    world_size = dist.get_world_size()
    dist.destroy_process_group()
    _wait_until_every_rank_tore_down(world_size)
