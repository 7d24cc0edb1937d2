"""CPU memory allocation: keep freed memory in the process, so large tensors do not pay page faults every time."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["reuse_freed_memory"]

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = -1  # man mallopt: "-1 disables trimming completely"


def reuse_freed_memory() -> bool:
    """
    Make glibc's ``malloc`` serve every allocation from the process heap and keep what is freed there, for reuse.

    By default glibc gives each allocation above 32 MiB its own ``mmap`` and returns it to the kernel on ``free``, so
    every large tensor (a full-resolution feature map, a patch's logits) comes back as fresh pages that the kernel
    faults in and zeroes 4 KiB at a time. A 3D network allocates such tensors in every layer, so on CPU this costs
    E2ENet, and to a lesser degree the baselines, a large share of a forward pass (README, "CPU speed side by side").
    Trimming is switched off altogether, not set to the largest threshold ``mallopt`` takes (2 GiB - 1): the paper
    network's forward pass at the bundles' patch frees about 2.4 GB at the top of the heap, which glibc then gave
    back to the kernel and faulted in again in every pass (e2enet-monai 0.9.0-0.9.3).
    The price: resident memory stays at its peak until the process exits, which suits a training or inference run.
    It is what preloading jemalloc or tcmalloc, as Intel's PyTorch CPU guides advise, would give, without a
    dependency.

    It applies to allocations made afterwards, in this process and in the processes it forks (data-loader workers).
    The bundles' configs call it first thing (``initialize``); ``e2enet-segment`` and the benchmarks call it too.

    Returns:
        whether it took effect (``False`` without glibc: macOS, Windows, musl; nothing is changed then).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
