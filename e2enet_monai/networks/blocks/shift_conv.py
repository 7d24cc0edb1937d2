"""E2ENet's basic block: optional depth shift, then a (1, 3, 3) or 3x3x3 convolution, InstanceNorm and LeakyReLU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

from e2enet_monai.networks.blocks.depth_shift import DepthShift
from e2enet_monai.networks.blocks.instance_norm import FastInstanceNorm3d
from e2enet_monai.networks.blocks.narrow_conv import NarrowConv3d

__all__ = ["CONV_MODES", "FOLD_MIN_CHANNELS", "ShiftConvBlock"]

CONV_MODES = ("shift", "plain2d", "conv3d")

# the narrowest output for which inference folds the depth into the batch (measured: ShiftConvBlock's docstring)
FOLD_MIN_CHANNELS = 40


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

    In inference (no gradient), a block whose (1, 3, 3) convolution has a depth stride of 1 and at least
    :data:`FOLD_MIN_CHANNELS` outputs folds the depth into the batch: the depth shift writes its copy depth-major,
    and the convolution (a :class:`NarrowConv3d`) runs on it as a 2D convolution over the ``B * D`` slices and
    copies the result back to ``(B, C, D, H, W)`` for the norm. Same weights and arithmetic (outputs equal to float
    round-off, tested against a plain ``F.conv3d`` reference). On 2 threads of an AVX2 EPYC, oneDNN's 2D kernel ran
    the paper network's 48-channel full-resolution convolutions 15-25 % faster than its 3D kernel with a batch of 1
    (a 96 -> 48 fusion node at 96 x 128 x 128: 1.72 s against 2.19 s, copies included), 24-32 outputs 2-5 % slower,
    64-192 the same, and all of them the same on 1 thread, so it looks like the 3D kernel's split of the work
    between threads (one-off timings, 2026-12-04; the forward pass of the whole paper network: "CPU speed side by
    side" in the README). The folded convolution goes through NNPACK where ``nnpack_conv.use_nnpack`` says so
    (``NarrowConv3d.nnpack``). Setting ``fold_depth`` switches the fold on or off on a built network; training,
    TorchScript and ONNX export keep the 3D convolution.

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
        # and the same convolution, initial weights included, trained through channels-last maps when narrow
        self.conv.conv = _narrow_copy(self.conv.conv, self.conv.conv.weight)
        # a (1, 3, 3) kernel that keeps every slice, over more than one channel (else nothing to fold)
        self.foldable = self.conv.conv.depth_foldable and in_channels > 1
        self.fold_depth = out_channels >= FOLD_MIN_CHANNELS  # whether inference folds when the block can

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.concat([x])

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
        self.conv.conv = _narrow_copy(old, old.weight.index_select(1, index))

    def concat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """
        ``self(torch.cat(tensors, dim=1))``, the concatenation done by the depth shift's single copy.

        Shape:
            tensors ``(B, C_i, D, H, W)`` with ``sum(C_i) == in_channels`` -> as :meth:`forward`.
        """
        fold = self.foldable and self.fold_depth and not torch.is_grad_enabled()  # NarrowConv3d folds such input
        return self.conv(self.shift.concat(tensors, depth_major=fold))


@torch.no_grad()
def _narrow_copy(conv: nn.Conv3d, weight: torch.Tensor) -> NarrowConv3d:
    """
    A :class:`NarrowConv3d` with ``conv``'s configuration, bias and ``weight`` (``(C_out, C_in', kd, kh, kw)``,
    ``C_in'`` its input channels). Built without drawing initial weights, so a network's random initialisation
    (and everything drawn after it) is what it was with ``nn.Conv3d``.
    """
    new = nn.utils.skip_init(NarrowConv3d, weight.shape[1], conv.out_channels, conv.kernel_size, conv.stride,
                             conv.padding, bias=conv.bias is not None,
                             channels_last_training=getattr(conv, "channels_last_training", True),
                             nnpack=getattr(conv, "nnpack", "auto"),
                             device=weight.device, dtype=weight.dtype)
    new.weight.copy_(weight)
    if conv.bias is not None:
        new.bias.copy_(conv.bias)
    return new
