"""Run one measurement in a fresh process, so measurements share no allocator state, threads or caches."""

from __future__ import annotations

import multiprocessing as mp
import queue as queues
from collections.abc import Callable
from multiprocessing.queues import Queue

__all__ = ["run_in_fresh_process"]


def run_in_fresh_process(worker: Callable[[dict, Queue], None], spec: dict, what: str) -> dict:
    """
    Start ``worker(spec, queue)`` in a spawned process and return the one dict it puts on ``queue``. A worker
    reports its own failure as ``{"error": "<type>: <message>"}``; that, or a worker that dies without a result,
    raises ``RuntimeError`` naming ``what`` was measured. ``worker`` must be importable (a module-level function).
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=worker, args=(spec, queue))
    proc.start()
    result = None
    while result is None:  # read before join: a child with a large result exits only once the queue is drained
        try:
            result = queue.get(timeout=1.0)
        except queues.Empty:
            if not proc.is_alive():
                try:
                    result = queue.get(timeout=1.0)
                except queues.Empty:
                    break
    proc.join()
    if result is None:
        # SIGKILL is what the kernel's out-of-memory killer sends: say so, and what to do about it
        hint = (" It was killed (SIGKILL), most likely by the out-of-memory killer: measure fewer networks or smaller "
                "shapes per command.") if proc.exitcode == -9 else ""
        raise RuntimeError(f"{what}: the measuring process died (exit code {proc.exitcode}) without a result.{hint}")
    if "error" in result:
        raise RuntimeError(f"{what} failed: {result['error']}")
    return result
