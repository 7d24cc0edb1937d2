"""2D convolutions through PyTorch's NNPACK build where it was measured faster than oneDNN's direct kernel on CPU."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

__all__ = ["NNPACK_CHUNK_PIXELS", "NNPACK_CHUNK_SLICES", "NNPACK_MAX_THREADS", "NNPACK_MIN_IN_CHANNELS",
           "NNPACK_MIN_PIXELS", "NNPACK_MODES", "check_nnpack_mode", "conv2d", "nnpack_chunk", "use_nnpack"]

NNPACK_MODES = ("auto", "on", "off")
# the "auto" rule, from E2ENet's folded (1, 3, 3) convolutions timed both ways, alone and inside the paper network
# (README, "Fast exact execution on CPU"): gains on 1 and 2 threads (more were not measured), losses or no gain
# with fewer input channels (16 inputs: 0.92-1.11x oneDNN's time) and on slices of 8 x 8 (1.2-1.6x)
NNPACK_MAX_THREADS = 2
NNPACK_MIN_IN_CHANNELS = 32
NNPACK_MIN_PIXELS = 12 * 12
# slices per NNPACK call: at least 8 and about 64k pixels (8 at 96 x 96 and 128 x 128, 16 at 64 x 64, all 24 x 24
# ones), the fastest call size measured alike with 1 and 2 threads (README, "Fast exact execution on CPU")
NNPACK_CHUNK_SLICES = 8
NNPACK_CHUNK_PIXELS = 64 * 1024

# PyTorch makes NNPACK's thread pool once per process, with PyTorch's thread count at NNPACK's first call, and a
# pool of 2 threads gained only 1.5-1.9x over 1 where oneDNN gains 2x. So the pool is made with 1 thread (the
# first call below) and T threads run T calls at once on different slices (NNPACK's workspace is per thread).
_pool_made: list[bool] = []
_workers: dict[int, ThreadPoolExecutor] = {}  # T - 1 helper threads by T - 1, remade when T changes


def _forget_workers() -> None:
    """In a forked child the helper threads do not exist: drop their executor so that a new one is made."""
    _workers.clear()


os.register_at_fork(after_in_child=_forget_workers)


def check_nnpack_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`NNPACK_MODES`, else a ``ValueError`` naming them."""
    if mode not in NNPACK_MODES:
        raise ValueError(f"nnpack must be one of {NNPACK_MODES}, got {mode!r}.")
    return mode


def use_nnpack(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], mode: str = "auto") -> bool:
    """
    Whether :func:`conv2d` runs ``x`` through NNPACK: never with ``mode="off"``, for a stride other than 1, a
    dtype other than float32, a tensor off the CPU or a PyTorch build without NNPACK; with ``"on"`` otherwise
    always; with ``"auto"`` when PyTorch has at most :data:`NNPACK_MAX_THREADS` threads and ``x`` at least
    :data:`NNPACK_MIN_IN_CHANNELS` input channels and slices of at least :data:`NNPACK_MIN_PIXELS` pixels.

    Shape:
        ``x``: ``(N, C_in, H, W)``; ``weight``: ``(C_out, C_in, kH, kW)``.
    """
    if check_nnpack_mode(mode) == "off" or tuple(stride) != (1, 1) or x.dtype != torch.float32 \
            or weight.dtype != torch.float32 or x.device.type != "cpu" or not torch.backends.nnpack.is_available():
        return False
    return mode == "on" or (torch.get_num_threads() <= NNPACK_MAX_THREADS and x.shape[1] >= NNPACK_MIN_IN_CHANNELS
                            and x.shape[2] * x.shape[3] >= NNPACK_MIN_PIXELS)


def nnpack_chunk(x: torch.Tensor) -> int:
    """
    How many of ``x``'s slices one NNPACK call takes in :func:`conv2d`: :data:`NNPACK_CHUNK_PIXELS` pixels' worth,
    at least :data:`NNPACK_CHUNK_SLICES`.

    Shape:
        ``x``: ``(N, C_in, H, W)``.
    """
    return max(NNPACK_CHUNK_SLICES, NNPACK_CHUNK_PIXELS // (x.shape[2] * x.shape[3]))


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int],
           padding: Sequence[int], out: torch.Tensor, mode: str = "auto") -> torch.Tensor:
    """
    ``F.conv2d(x, weight, bias, stride, padding)``, through NNPACK's FFT or Winograd forms when :func:`use_nnpack`
    says so (they take fewer multiplications than oneDNN's direct kernel: outputs equal to float32 round-off of
    those forms, about 1e-5 of the output's largest magnitude against about 1e-6 for oneDNN). PyTorch's own
    ``conv2d`` prefers oneDNN whenever it is built in, so NNPACK is called explicitly: in calls of
    :func:`nnpack_chunk` slices, the slices split into one contiguous part per PyTorch thread, each part's calls
    made by one thread (NNPACK computes each slice alone, so the bits do not depend on the split).

    ``out``: where the result is written (and returned), e.g. a view of a channels-first ``(B, C_out, D, H', W')``
    map as ``(D, C_out, H', W')``.

    Shape:
        ``(N, C_in, H, W)`` -> ``(N, C_out, H', W')``.
    """
    if not use_nnpack(x, weight, stride, mode):
        return out.copy_(F.conv2d(x, weight, bias, tuple(stride), tuple(padding)))
    threads = torch.get_num_threads()
    if not _pool_made:
        _make_pool_of_one_thread(threads)
    parts = min(threads, x.shape[0])
    size = -(-x.shape[0] // parts)
    if parts == 1:
        _nnpack_into(out, x, weight, bias, padding)
        return out
    if parts - 1 not in _workers:
        for executor in _workers.values():
            executor.shutdown()
        _workers.clear()
        _workers[parts - 1] = ThreadPoolExecutor(parts - 1, thread_name_prefix="e2enet-nnpack")
    helpers, inference = _workers[parts - 1], torch.is_inference_mode_enabled()
    pending = [helpers.submit(_nnpack_part, inference, out[start:start + size], x[start:start + size], weight, bias,
                              padding) for start in range(size, x.shape[0], size)]
    _nnpack_into(out[:size], x[:size], weight, bias, padding)
    for future in pending:
        future.result()
    return out


def _make_pool_of_one_thread(threads: int) -> None:
    """NNPACK's first call in this process, made with 1 PyTorch thread; ``threads``: the count to restore."""
    torch.set_num_threads(1)
    try:
        torch._nnpack_spatial_convolution(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 3, 3), None, [1, 1], [1, 1])
    finally:
        torch.set_num_threads(threads)
    _pool_made.append(True)


def _nnpack_into(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 padding: Sequence[int]) -> None:
    """``out[:] = conv2d(x)`` through NNPACK in calls of :func:`nnpack_chunk` slices, in the calling thread."""
    chunk = nnpack_chunk(x)
    for start in range(0, x.shape[0], chunk):
        out[start:start + chunk] = torch._nnpack_spatial_convolution(x[start:start + chunk], weight, bias,
                                                                     list(padding), [1, 1])


def _nnpack_part(inference: bool, out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None, padding: Sequence[int]) -> None:
    """:func:`_nnpack_into` in a helper thread, under the caller's grad modes (they are per thread)."""
    with torch.inference_mode(inference), torch.no_grad():  # (inference_mode(False) turns gradients on)
        _nnpack_into(out, x, weight, bias, padding)
