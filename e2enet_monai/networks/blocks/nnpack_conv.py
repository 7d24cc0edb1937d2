"""2D convolutions through PyTorch's NNPACK build where it was measured faster than oneDNN's direct kernel on CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["NNPACK_CHUNK_MIN_PIXELS", "NNPACK_CHUNK_SLICES", "NNPACK_MAX_THREADS", "NNPACK_MIN_IN_CHANNELS",
           "NNPACK_MIN_PIXELS", "NNPACK_MODES", "check_nnpack_mode", "conv2d", "nnpack_chunk", "use_nnpack"]

NNPACK_MODES = ("auto", "on", "off")
# the "auto" rule, from E2ENet's folded (1, 3, 3) convolutions timed both ways inside the paper network (README,
# "Fast exact execution on CPU"): gains on 1 and 2 threads (more were not measured), losses with fewer input
# channels (16 -> 48 at full resolution: 1.3-1.5x oneDNN's time) and on slices of 8 x 8 or smaller (1.5-7x)
NNPACK_MAX_THREADS = 2
NNPACK_MIN_IN_CHANNELS = 32
NNPACK_MIN_PIXELS = 16 * 16
# with 1 thread, slices of 128 x 128 and more went faster in calls of 8 slices than all at once (0.70-0.85x of
# oneDNN's time against 0.80-0.98x, 4-16 slices alike); smaller slices and 2 threads gained nothing or lost
NNPACK_CHUNK_SLICES = 8
NNPACK_CHUNK_MIN_PIXELS = 128 * 128

# PyTorch sizes NNPACK's thread pool once per process, with its thread count at NNPACK's first call; later calls
# keep that pool whatever torch.get_num_threads() says, so NNPACK is only used while the two agree
_pool_threads: list[int] = []


def check_nnpack_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`NNPACK_MODES`, else a ``ValueError`` naming them."""
    if mode not in NNPACK_MODES:
        raise ValueError(f"nnpack must be one of {NNPACK_MODES}, got {mode!r}.")
    return mode


def use_nnpack(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], mode: str = "auto") -> bool:
    """
    Whether :func:`conv2d` runs ``x`` through NNPACK: never with ``mode="off"``, for a stride other than 1, a
    dtype other than float32, a tensor off the CPU, a PyTorch build without NNPACK, or while PyTorch's intra-op
    thread count differs from the one NNPACK's pool was made with; with ``"on"`` otherwise always; with ``"auto"``
    when there are at most :data:`NNPACK_MAX_THREADS` threads, at least :data:`NNPACK_MIN_IN_CHANNELS` input
    channels and slices of at least :data:`NNPACK_MIN_PIXELS` pixels.

    Shape:
        ``x``: ``(N, C_in, H, W)``; ``weight``: ``(C_out, C_in, kH, kW)``.
    """
    if check_nnpack_mode(mode) == "off" or tuple(stride) != (1, 1) or x.dtype != torch.float32 \
            or weight.dtype != torch.float32 or x.device.type != "cpu" or not torch.backends.nnpack.is_available():
        return False
    threads = torch.get_num_threads()
    if _pool_threads and _pool_threads[0] != threads:
        return False
    return mode == "on" or (threads <= NNPACK_MAX_THREADS and x.shape[1] >= NNPACK_MIN_IN_CHANNELS
                            and x.shape[2] * x.shape[3] >= NNPACK_MIN_PIXELS)


def nnpack_chunk(x: torch.Tensor) -> int:
    """
    How many of ``x``'s slices :func:`conv2d` gives NNPACK per call: :data:`NNPACK_CHUNK_SLICES` with 1 thread on
    slices of at least :data:`NNPACK_CHUNK_MIN_PIXELS` pixels, else all of them.

    Shape:
        ``x``: ``(N, C_in, H, W)``.
    """
    if torch.get_num_threads() == 1 and x.shape[2] * x.shape[3] >= NNPACK_CHUNK_MIN_PIXELS:
        return NNPACK_CHUNK_SLICES
    return x.shape[0]


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int],
           padding: Sequence[int], mode: str = "auto") -> torch.Tensor:
    """
    ``F.conv2d(x, weight, bias, stride, padding)``, through NNPACK's FFT or Winograd forms when :func:`use_nnpack`
    says so (they take fewer multiplications than oneDNN's direct kernel: outputs equal to float32 round-off of
    those forms, about 1e-5 of the output's largest magnitude against about 1e-6 for oneDNN), in calls of
    :func:`nnpack_chunk` slices. PyTorch's own ``conv2d`` prefers oneDNN whenever it is built in, so NNPACK is called
    explicitly.

    Shape:
        ``(N, C_in, H, W)`` -> ``(N, C_out, H', W')``.
    """
    if use_nnpack(x, weight, stride, mode):
        if not _pool_threads:
            _pool_threads.append(torch.get_num_threads())
        chunk = nnpack_chunk(x)
        if chunk >= x.shape[0]:
            return torch._nnpack_spatial_convolution(x, weight, bias, list(padding), [1, 1])
        # filled chunk by chunk: only one chunk's output exists beside the result (stride 1, so sizes are known)
        y = x.new_empty(x.shape[0], weight.shape[0], x.shape[2] + 2 * padding[0] - weight.shape[2] + 1,
                        x.shape[3] + 2 * padding[1] - weight.shape[3] + 1)
        for start in range(0, x.shape[0], chunk):
            y[start:start + chunk] = torch._nnpack_spatial_convolution(x[start:start + chunk], weight, bias,
                                                                       list(padding), [1, 1])
        return y
    return F.conv2d(x, weight, bias, tuple(stride), tuple(padding))
