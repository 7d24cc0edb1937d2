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


def _shift_depth(dst: torch.Tensor, src: torch.Tensor, shift: int) -> None:
    """``dst[:, :, d] = src[:, :, d - shift]``, zero where ``d - shift`` falls outside; both ``(B, c, D, H, W)``."""
    depth = src.shape[2]
    if shift >= depth or shift <= -depth:
        dst.zero_()
    elif shift > 0:
        dst[:, :, :shift].zero_()
        dst[:, :, shift:].copy_(src[:, :, : depth - shift])
    elif shift < 0:
        dst[:, :, depth + shift :].zero_()
        dst[:, :, : depth + shift].copy_(src[:, :, -shift:])
    else:
        dst.copy_(src)


class _ShiftConcat(torch.autograd.Function):
    """Concatenation along channels and depth shift in one copy each way (see :meth:`DepthShift.concat`)."""

    @staticmethod
    def forward(ctx, plan: list[tuple[int, int, int, int, int]], width: int, *tensors: torch.Tensor) -> torch.Tensor:
        first = tensors[0]
        out = first.new_empty((first.shape[0], width, *first.shape[2:]))
        for index, src_start, src_stop, dst_start, shift in plan:
            dst = out[:, dst_start : dst_start + src_stop - src_start]
            _shift_depth(dst, tensors[index][:, src_start:src_stop], shift)
        ctx.plan = plan
        ctx.shapes = [t.shape for t in tensors]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        grads = [grad.new_empty(shape) for shape in ctx.shapes]
        for index, src_start, src_stop, dst_start, shift in ctx.plan:
            # the adjoint of a shift by s is a shift by -s (the slices it dropped get zero gradient)
            _shift_depth(grads[index][:, src_start:src_stop], grad[:, dst_start : dst_start + src_stop - src_start],
                         -shift)
        return (None, None, *grads)


class DepthShift(nn.Module):
    """
    Shift contiguous channel groups along depth, filling with zeros: ``out[:, g_i, d] = in[:, g_i, d - s_i]``
    with ``s_i = i - groups // 2``. Followed by a (1, 3, 3) convolution this gives a 3D receptive field at the
    cost of a 2D convolution (E2ENet's "restricted depth-shift 3D convolution").

    Each channel is written once, straight from the input to its shifted place (and :meth:`concat` does the same
    for a channel concatenation followed by the shift, as E2ENet's fusion nodes need), where slicing, padding and
    concatenating would copy every voxel two or three times; the backward pass is the same copy the other way.
    TorchScript (scripted or traced, as ONNX export traces) runs the equivalent slice-pad-concatenate form.

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
        return self.concat([x])

    def concat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """
        ``self(torch.cat(tensors, dim=1))`` without the intermediate concatenation.

        Shape:
            tensors ``(B, C_i, D, H, W)`` with ``sum(C_i) == channels`` -> ``(B, channels, D, H, W)``.
        """
        widths = [int(t.shape[1]) for t in tensors]
        if sum(widths) != self.channels:
            raise ValueError(f"DepthShift({self.channels}) got {sum(widths)} channels ({widths} concatenated).")
        if len(self.shifts) == 0:
            return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)
        if torch.jit.is_scripting() or torch.jit.is_tracing():  # TorchScript and ONNX export: plain ops only
            return self._shift_by_slices(torch.cat(tensors, dim=1))
        return self._shift_by_copies(tensors, widths)

    @torch.jit.unused
    def _shift_by_copies(self, tensors: list[torch.Tensor], widths: list[int]) -> torch.Tensor:
        return _ShiftConcat.apply(self._plan(widths), self.channels, *tensors)

    def _plan(self, widths: list[int]) -> list[tuple[int, int, int, int, int]]:
        """``(tensor, first channel, stop channel, first output channel, shift)`` for every piece of the output:
        each input tensor cut where a shift group starts or ends."""
        plan = []
        offset = 0
        for index, width in enumerate(widths):
            for start, stop, shift in zip(self.starts, self.stops, self.shifts):
                lo, hi = max(start, offset), min(stop, offset + width)
                if lo < hi:
                    plan.append((index, lo - offset, hi - offset, lo, shift))
            offset += width
        return plan

    def _shift_by_slices(self, x: torch.Tensor) -> torch.Tensor:
        depth = x.shape[2]
        groups = torch.split(x, [stop - start for start, stop in zip(self.starts, self.stops)], dim=1)
        parts: list[torch.Tensor] = []
        for group, shift in zip(groups, self.shifts):
            s = max(-depth, min(depth, shift))
            # a negative pad crops: (s, -s) on depth moves the group by s slices and keeps depth unchanged
            parts.append(F.pad(group, (0, 0, 0, 0, s, -s)))
        return torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, shifts={self.shifts}"
