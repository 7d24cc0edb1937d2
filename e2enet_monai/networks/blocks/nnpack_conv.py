"""2D convolutions through PyTorch's NNPACK build where it was measured faster than oneDNN's direct kernel on CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["NNPACK_MAX_THREADS", "NNPACK_MIN_IN_CHANNELS", "NNPACK_MIN_PIXELS", "NNPACK_MODES", "check_nnpack_mode",
           "conv2d", "use_nnpack"]

NNPACK_MODES = ("auto", "on", "off")
# the "auto" rule, from E2ENet's folded (1, 3, 3) convolutions timed both ways inside the paper network (README,
# "Fast exact execution on CPU"): gains on 1 and 2 threads (more were not measured), losses with fewer input
# channels (16 -> 48 at full resolution: 1.3-1.5x oneDNN's time) and on slices of 8 x 8 or smaller (1.5-7x)
NNPACK_MAX_THREADS = 2
NNPACK_MIN_IN_CHANNELS = 32
NNPACK_MIN_PIXELS = 16 * 16

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


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int],
           padding: Sequence[int], mode: str = "auto") -> torch.Tensor:
    """
    ``F.conv2d(x, weight, bias, stride, padding)``, through NNPACK's FFT or Winograd forms when :func:`use_nnpack`
    says so (they take fewer multiplications than oneDNN's direct kernel: outputs equal to float32 round-off of
    those forms, about 1e-5 of the output's largest magnitude against about 1e-6 for oneDNN). PyTorch's own
    ``conv2d`` prefers oneDNN whenever it is built in, so NNPACK is called explicitly.

    Shape:
        ``(N, C_in, H, W)`` -> ``(N, C_out, H', W')``.
    """
    if use_nnpack(x, weight, stride, mode):
        if not _pool_threads:
            _pool_threads.append(torch.get_num_threads())
        return torch._nnpack_spatial_convolution(x, weight, bias, list(padding), [1, 1])
    return F.conv2d(x, weight, bias, tuple(stride), tuple(padding))
