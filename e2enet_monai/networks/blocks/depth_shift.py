"""Restricted depth-shift: a parameter-free channel-group shift along depth (the first spatial axis)."""

import math
from collections.abc import Sequence
from typing import Optional

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
    def forward(ctx, plan: list[tuple[int, int, int, int, int]], width: int, depth_major: bool,
                *tensors: torch.Tensor) -> torch.Tensor:
        first = tensors[0]
        batch, depth, spatial = first.shape[0], first.shape[2], first.shape[3:]
        if depth_major:  # stored (B, D, C, H, W), seen as (B, C, D, H, W)
            out = first.new_empty((batch, depth, width, *spatial)).transpose(1, 2)
        else:
            out = first.new_empty((batch, width, depth, *spatial))
        for index, src_start, src_stop, dst_start, shift in plan:
            dst = out[:, dst_start : dst_start + src_stop - src_start]
            _shift_depth(dst, tensors[index][:, src_start:src_stop], shift)
        ctx.plan = plan
        ctx.shapes = [t.shape for t in tensors]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        # every input channel gets its gradient written by the plan, unless some were not selected: those get zeros
        covered = sum(stop - start for _, start, stop, _, _ in ctx.plan) == sum(shape[1] for shape in ctx.shapes)
        grads = [grad.new_empty(shape) if covered else grad.new_zeros(shape) for shape in ctx.shapes]
        for index, src_start, src_stop, dst_start, shift in ctx.plan:
            # the adjoint of a shift by s is a shift by -s (the slices it dropped get zero gradient)
            _shift_depth(grads[index][:, src_start:src_stop], grad[:, dst_start : dst_start + src_stop - src_start],
                         -shift)
        return (None, None, None, *grads)


class DepthShift(nn.Module):
    """
    Shift contiguous channel groups along depth, filling with zeros: ``out[:, g_i, d] = in[:, g_i, d - s_i]``
    with ``s_i = i - groups // 2``. Followed by a (1, 3, 3) convolution this gives a 3D receptive field at the
    cost of a 2D convolution (E2ENet's "restricted depth-shift 3D convolution").

    Each channel is written once, straight from the input to its shifted place (and :meth:`concat` does the same
    for a channel concatenation followed by the shift, as E2ENet's fusion nodes need), where slicing, padding and
    concatenating would copy every voxel two or three times; the backward pass is the same copy the other way.
    TorchScript (scripted or traced, as ONNX export traces) runs the equivalent slice-pad-concatenate form.

    After :meth:`select` only the chosen channels are written (each still shifted as its group), so a
    convolution whose other input channels are pruned reads a smaller tensor (see ``E2ENet.compact``); the inputs
    may then also carry only some of the channels (``present``), e.g. an upsampling that computes only those read.

    Args:
        channels: number of input channels C.
        groups: number of channel groups G; shifts run from ``-(G // 2)`` to ``G - 1 - G // 2``.
            When ``channels < groups`` the module is the identity.

    Shape:
        input ``(B, C, D, H, W)`` -> output ``(B, C, D, H, W)``, or ``(B, len(keep), D, H, W)`` after
        :meth:`select`.
    """

    starts: list[int]
    stops: list[int]
    shifts: list[int]
    keep: Optional[list[int]]
    present: Optional[list[int]]
    __jit_ignored_attributes__ = ["_plans"]  # the eager path's cache; TorchScript takes the slice form

    def __init__(self, channels: int, groups: int = 5) -> None:
        super().__init__()
        self.channels = channels
        self.groups = groups
        offsets = depth_shift_offsets(channels, groups)
        self.starts = [o[0] for o in offsets]
        self.stops = [o[1] for o in offsets]
        self.shifts = [o[2] for o in offsets]
        self.keep = None
        self.present = None
        self._plans: dict[tuple[int, ...], list[tuple[int, int, int, int, int]]] = {}  # per input widths

    def select(self, keep: Sequence[int], present: Sequence[int] | None = None) -> None:
        """
        Write only channels ``keep`` (ascending, unique, in ``[0, channels)``), in that order. ``present``: the
        channels the concatenated inputs carry, in order (default all ``channels``); it must hold every kept one.
        """
        keep = [int(c) for c in keep]
        carried = list(range(self.channels)) if present is None else [int(c) for c in present]
        for name, values in (("keep", keep), ("present", carried)):
            if not values or values != sorted(set(values)) or values[0] < 0 or values[-1] >= self.channels:
                raise ValueError(f"DepthShift({self.channels}).select needs ascending unique {name} channels in "
                                 f"[0, {self.channels}), got {values[:8]}{' ...' if len(values) > 8 else ''}.")
        missing = sorted(set(keep) - set(carried))
        if missing:
            raise ValueError(f"DepthShift({self.channels}).select: kept channels {missing[:8]} are not present.")
        self.keep = keep
        self.present = None if present is None else carried
        self._plans = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.concat([x])

    def concat(self, tensors: list[torch.Tensor], depth_major: bool = False) -> torch.Tensor:
        """
        ``self(torch.cat(tensors, dim=1))`` without the intermediate concatenation.

        ``depth_major``: store the result depth-major, a ``(B, D, C, H, W)`` tensor seen through
        ``transpose(1, 2)``, so that ``out.transpose(1, 2).reshape(B * D, C, H, W)`` is a view: the layout in which
        every (1, 3, 3) convolution is a 2D convolution over depth slices (``ShiftConvBlock``). It makes the copy
        path copy even when nothing is shifted; TorchScript and tracing ignore it (same values, channels-first).

        Shape:
            tensors ``(B, C_i, D, H, W)`` with ``sum(C_i) == channels`` (``len(present)`` after :meth:`select`)
            -> ``(B, channels, D, H, W)`` (``(B, len(keep), D, H, W)`` after :meth:`select`).
        """
        widths = [int(t.shape[1]) for t in tensors]
        present = self.present
        expected = self.channels if present is None else len(present)
        if sum(widths) != expected:
            raise ValueError(f"DepthShift({self.channels}) got {sum(widths)} channels ({widths} concatenated), "
                             f"expected {expected}.")
        keep = self.keep
        if len(self.shifts) == 0 and keep is None and not depth_major:
            return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)
        if torch.jit.is_scripting() or torch.jit.is_tracing():  # TorchScript and ONNX export: plain ops only
            x = torch.cat(tensors, dim=1)
            if present is not None:  # back to the full channel layout, absent channels zero
                full = x.new_zeros([x.shape[0], self.channels] + list(x.shape[2:]))
                x = full.index_copy(1, torch.tensor(present, dtype=torch.long, device=x.device), x)
            x = self._shift_by_slices(x) if len(self.shifts) > 0 else x
            return x if keep is None else x[:, keep]
        return self._shift_by_copies(tensors, widths, depth_major)

    @torch.jit.unused
    def _shift_by_copies(self, tensors: list[torch.Tensor], widths: list[int], depth_major: bool) -> torch.Tensor:
        plan = self._plans.get(tuple(widths))
        if plan is None:  # built once per input layout, not on every forward pass
            plan = self._plans[tuple(widths)] = self._plan(widths)
        return _ShiftConcat.apply(plan, sum(stop - start for _, start, stop, _, _ in plan), depth_major, *tensors)

    def _plan(self, widths: list[int]) -> list[tuple[int, int, int, int, int]]:
        """``(tensor, first channel, stop channel, first output channel, shift)`` for every piece of the output:
        runs of consecutive written channels of one input tensor and one shift group."""
        shift_of = [0] * self.channels
        for start, stop, shift in zip(self.starts, self.stops, self.shifts):
            shift_of[start:stop] = [shift] * (stop - start)
        tensor_of, local = [], []
        for index, width in enumerate(widths):
            tensor_of += [index] * width
            local += list(range(width))
        position = {c: j for j, c in enumerate(range(self.channels) if self.present is None else self.present)}
        plan: list[tuple[int, int, int, int, int]] = []
        for out, channel in enumerate(range(self.channels) if self.keep is None else self.keep):
            j = position[channel]
            index, src, shift = tensor_of[j], local[j], shift_of[channel]
            if plan and plan[-1][0] == index and plan[-1][2] == src and plan[-1][4] == shift:
                last = plan[-1]
                plan[-1] = (index, last[1], src + 1, last[3], shift)
            else:
                plan.append((index, src, src + 1, out, shift))
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
        kept = "" if self.keep is None else f", keep={len(self.keep)} of {self.channels}"
        return f"channels={self.channels}, groups={self.groups}, shifts={self.shifts}{kept}"
