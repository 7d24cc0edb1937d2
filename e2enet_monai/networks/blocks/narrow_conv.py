"""A 3D convolution with two CPU layouts of its own: channels-last training when narrow, depth-folded inference."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from e2enet_monai.networks.blocks.nnpack_conv import check_nnpack_mode, conv2d

__all__ = ["NARROW_CHANNELS", "NarrowConv3d"]

# oneDNN's AVX-512 kernels block channels-first maps by 16 channels: narrower layers are padded
NARROW_CHANNELS = 16


class NarrowConv3d(nn.Conv3d):
    """
    ``nn.Conv3d`` (same parameters, state-dict keys and outputs) that, while training on CPU with fewer than
    :data:`NARROW_CHANNELS` output channels, convolves a channels-last copy of its input and returns a
    channels-first copy of the result.

    Over channels-first (NCDHW) maps, PyTorch's oneDNN convolution reorders the maps into 16-channel blocks (half
    padding for 8 channels) in every call, forward and backward; over channels-last maps it runs its brgemm kernels
    on the maps as they are (``ONEDNN_VERBOSE=1``, PyTorch 2.13, AVX-512). For E2ENet's full-resolution (1, 3, 3)
    convolutions of the CPU demo network (8 output channels, 8-16 inputs, patch batch 4 x 32 x 48 x 48) forward
    and backward took 0.4-0.8x the time with both copies included (one-off timings), and a training step takes
    about 10 % less (``tools/benchmark_train_step.py``). With 16 or more output channels, in eval mode or
    without a gradient to compute (inference, where the gain is not consistent; a frozen network), it is
    ``nn.Conv3d`` itself; the rest of the network keeps channels-first maps, so no other layer changes. Gradients
    equal ``nn.Conv3d``'s to float round-off.

    Without a gradient to compute, a (1, k, k) convolution with a depth stride of 1 given a *depth-major* input (a
    ``(B, D, C, H, W)`` tensor seen through ``transpose(1, 2)``, as ``DepthShift.concat(..., depth_major=True)``
    writes it for ``ShiftConvBlock``) runs as a 2D convolution over the ``B * D`` slices, which that layout holds as
    a view, and writes its result straight into a channels-first output: the same weights and arithmetic, outputs
    equal to float round-off. Any other input is convolved as ``nn.Conv3d`` does, and so is a one-channel or
    one-slice input, which is depth-major and channels-first at once. The folded 2D convolution goes through NNPACK
    where ``nnpack_conv.use_nnpack`` says so (with ``"auto"``: float32 on CPU, at most 2 threads, at least 32 input
    channels, slices of at least 12 x 12), else through oneDNN.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, bias, device, dtype: as ``nn.Conv3d`` (no
            dilation, groups or padding modes).
        channels_last_training: ``False`` turns the channels-last path off (``nn.Conv3d`` in every case); an
            attribute, so it can be switched on a built network too.
        nnpack: ``"auto"``, ``"on"`` or ``"off"``: when the depth-folded path uses NNPACK (see
            ``nnpack_conv.use_nnpack``); an attribute too.

    Shape:
        ``(B, C_in, D, H, W)`` -> ``(B, C_out, D', H', W')``, channels-first in and out.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int] | int,
                 stride: Sequence[int] | int = 1, padding: Sequence[int] | int = 0, bias: bool = True,
                 channels_last_training: bool = True, nnpack: str = "auto", device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        check_nnpack_mode(nnpack)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=bias,  # type: ignore[arg-type]
                         device=device, dtype=dtype)
        self.channels_last_training = channels_last_training
        self.nnpack = nnpack
        self.narrow = out_channels < NARROW_CHANNELS  # an attribute: TorchScript cannot read the module's constant
        self.depth_foldable = self.kernel_size[0] == 1 and self.stride[0] == 1  # each output slice from one input slice

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.channels_last_training and self.narrow and self.training and torch.is_grad_enabled() \
                and (x.requires_grad or self.weight.requires_grad) and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last_3d)
            return self._conv_forward(x, self.weight, self.bias).contiguous()
        if not torch.is_grad_enabled() and self.depth_foldable and x.dim() == 5 \
                and x.shape[1] > 1 and x.shape[2] > 1 and x.transpose(1, 2).is_contiguous() \
                and not torch.jit.is_scripting() and not torch.jit.is_tracing():
            return self._depth_folded(x)
        return self._conv_forward(x, self.weight, self.bias)

    @torch.jit.unused
    def _depth_folded(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, C_in, D, H, W)``, depth-major -> ``(B, C_out, D, H', W')``, channels-first."""
        b, _, d, h, w = x.shape
        size = [(n + 2 * p - k) // s + 1 for n, p, k, s in zip((h, w), self.padding[1:], self.kernel_size[1:],
                                                                 self.stride[1:])]
        out = x.new_empty((b, self.out_channels, d, *size))  # a tuple: MONAI's MetaTensor takes no varargs
        for i in range(b):  # each sample's (D, C_in, H, W) slices, a view; written straight into the result
            conv2d(x[i].transpose(0, 1), self.weight.squeeze(2), self.bias, self.stride[1:], self.padding[1:],
                   out[i].transpose(0, 1), self.nnpack)
        return out
