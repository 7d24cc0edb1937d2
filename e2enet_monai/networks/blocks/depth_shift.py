"""Restricted depth-shift: a parameter-free channel-group shift along depth (the first spatial axis)."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DepthShift", "depth_shift_offsets"]


def depth_shift_offsets(channels: int, groups: int) -> list[tuple[int, int, int]]:
    """
    Channel groups and their depth offsets for :class:`DepthShift`.

    Channels are split into contiguous groups the way ``torch.chunk`` does (each ``ceil(channels / groups)``
    wide, the last one smaller, possibly fewer than ``groups`` groups); group ``i`` is shifted by
    ``i - groups // 2`` slices. No group is shifted when ``channels < groups``.

    Returns:
        a list of ``(start_channel, stop_channel, shift)``; empty when nothing is shifted.
    """
    if groups < 1:
        raise ValueError(f"shift groups must be >= 1, got {groups}.")
    if channels < groups or groups == 1:
        return []
    width = math.ceil(channels / groups)
    return [(start, min(start + width, channels), i - groups // 2) for i, start in enumerate(range(0, channels, width))]


class DepthShift(nn.Module):
    """
    Shift contiguous channel groups along depth, filling with zeros: ``out[:, g_i, d] = in[:, g_i, d - s_i]``
    with ``s_i = i - groups // 2``. Followed by a (1, 3, 3) convolution this gives a 3D receptive field at the
    cost of a 2D convolution (E2ENet's "restricted depth-shift 3D convolution").

    Args:
        channels: number of input channels C.
        groups: number of channel groups G; shifts run from ``-(G // 2)`` to ``G - 1 - G // 2``.
            When ``channels < groups`` the module is the identity.

    Shape:
        input ``(B, C, D, H, W)`` -> output ``(B, C, D, H, W)``.
    """

    starts: list[int]
    stops: list[int]
    shifts: list[int]

    def __init__(self, channels: int, groups: int = 5) -> None:
        super().__init__()
        self.channels = channels
        self.groups = groups
        offsets = depth_shift_offsets(channels, groups)
        self.starts = [o[0] for o in offsets]
        self.stops = [o[1] for o in offsets]
        self.shifts = [o[2] for o in offsets]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.shifts) == 0:
            return x
        depth = x.shape[2]
        # torch.split, not one slice per group: its backward is one concatenation, where each slice's backward
        # would fill a zero tensor of the whole input (a tenth of an E2ENet training step on CPU)
        groups = torch.split(x, [stop - start for start, stop in zip(self.starts, self.stops)], dim=1)
        parts: list[torch.Tensor] = []
        for group, shift in zip(groups, self.shifts):
            s = max(-depth, min(depth, shift))
            # a negative pad crops: (s, -s) on depth moves the group by s slices and keeps depth unchanged
            parts.append(F.pad(group, (0, 0, 0, 0, s, -s)))
        return torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, shifts={self.shifts}"
