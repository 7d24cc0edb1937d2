"""E2ENet's basic block: optional depth shift, then a (1, 3, 3) or 3x3x3 convolution, InstanceNorm and LeakyReLU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

from e2enet_monai.networks.blocks.depth_shift import DepthShift
from e2enet_monai.networks.blocks.instance_norm import FastInstanceNorm3d

__all__ = ["CONV_MODES", "ShiftConvBlock"]

CONV_MODES = ("shift", "plain2d", "conv3d")


class ShiftConvBlock(nn.Module):
    """
    ``DepthShift -> Conv3d (1, 3, 3) with bias -> InstanceNorm3d (affine) -> LeakyReLU(0.01)``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: convolution stride (int or one per spatial axis), e.g. ``(1, 2, 2)`` for an anisotropic level.
        conv_mode: ``"shift"`` (depth shift + (1, 3, 3), the paper's block), ``"plain2d"`` ((1, 3, 3) without
            shift) or ``"conv3d"`` (3x3x3 without shift), the latter two for ablations.
        shift_groups: channel groups of the depth shift (``"shift"`` mode only).

    Shape:
        ``(B, in_channels, D, H, W)`` -> ``(B, out_channels, D / s_d, H / s_h, W / s_w)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: Sequence[int] | int = 1,
        conv_mode: str = "shift",
        shift_groups: int = 5,
    ) -> None:
        super().__init__()
        if conv_mode not in CONV_MODES:
            raise ValueError(f"conv_mode must be one of {CONV_MODES}, got {conv_mode!r}.")
        # one group shifts nothing: the ablation modes keep the module (and its fused concatenation)
        self.shift = DepthShift(in_channels, shift_groups if conv_mode == "shift" else 1)
        self.conv = Convolution(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            strides=stride,
            kernel_size=3 if conv_mode == "conv3d" else (1, 3, 3),
            adn_ordering="NA",
            act=("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
            norm=("instance", {"affine": True}),
            bias=True,
        )
        # the same instance norm (parameters, state-dict keys) through the faster group-norm kernel
        self.conv.adn.N = FastInstanceNorm3d(out_channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.shift(x))

    @torch.no_grad()
    def compact(self, keep: Sequence[int], present: Sequence[int] | None = None) -> None:
        """
        Drop every input channel but ``keep`` (ascending): the depth shift writes only those and the convolution
        keeps only their weights, so the output is unchanged when the dropped channels' weights are all zero (a
        channel-pruned sparse mesh) and the convolution costs ``len(keep) / in_channels`` of its FLOPs.
        ``present``: the input channels :meth:`concat` will be given (default all), see ``DepthShift.select``.
        """
        self.shift.select(keep, present)
        old = self.conv.conv
        index = torch.as_tensor(list(keep), dtype=torch.long, device=old.weight.device)
        new = nn.Conv3d(len(index), old.out_channels, old.kernel_size, old.stride, old.padding,  # type: ignore[arg-type]
                        bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype)
        new.weight.copy_(old.weight.index_select(1, index))
        if old.bias is not None:
            new.bias.copy_(old.bias)
        self.conv.conv = new

    def concat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """
        ``self(torch.cat(tensors, dim=1))``, the concatenation done by the depth shift's single copy.

        Shape:
            tensors ``(B, C_i, D, H, W)`` with ``sum(C_i) == in_channels`` -> as :meth:`forward`.
        """
        return self.conv(self.shift.concat(tensors))
