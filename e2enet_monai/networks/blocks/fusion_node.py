"""One node of E2ENet's dynamic sparse feature fusion (DSFF) mesh."""

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn as nn

from e2enet_monai.networks.blocks.shift_conv import ShiftConvBlock
from e2enet_monai.networks.blocks.stride_max_pool import StrideMaxPool3d
from e2enet_monai.networks.blocks.stride_transpose import StrideTransposeConv3d

__all__ = ["FusionNode"]


class FusionNode(nn.Module):
    """
    Mesh node X(l, s): concatenates, in this order,

    - ``same``: X(l, s-1), the previous node on the same level (``channels`` wide);
    - ``coarse``: X(l+1, s-1) brought up by a transposed convolution (kernel = stride = ``up_stride``, no bias,
      ``coarse_channels -> channels``; a :class:`StrideTransposeConv3d`);
    - ``fine`` (optional): X(l-1, s-1) brought down by max-pooling (kernel = stride = ``down_stride``; a
      :class:`StrideMaxPool3d`);

    then fuses them with ``num_blocks`` :class:`ShiftConvBlock` (the first ``concat -> channels``, the others
    ``channels -> channels``). The concatenation is not materialised: the first block's depth shift copies each
    input straight to its shifted place.

    Args:
        channels: channels C[l] of this level (and of the output).
        coarse_channels: channels C[l+1] of the coarser level.
        fine_channels: channels C[l-1] of the finer level, or 0 when the node has no finer input (level 0).
        up_stride: pool size between levels l and l+1.
        down_stride: pool size between levels l-1 and l (ignored when ``fine_channels == 0``).
        num_blocks: fusion blocks (the paper uses 2 on the last diagonal of the mesh, 1 elsewhere).
        conv_mode: see :class:`ShiftConvBlock`.
        shift_groups: see :class:`ShiftConvBlock`.

    Shape:
        ``same``: ``(B, C[l], *S)``, ``coarse``: ``(B, C[l+1], *S / up_stride)``,
        ``fine``: ``(B, C[l-1], *S * down_stride)`` -> ``(B, C[l], *S)``.
    """

    down_keep: Optional[list[int]]

    def __init__(
        self,
        channels: int,
        coarse_channels: int,
        fine_channels: int,
        up_stride: Sequence[int] | int,
        down_stride: Sequence[int] | int = 1,
        num_blocks: int = 1,
        conv_mode: str = "shift",
        shift_groups: int = 5,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.up = StrideTransposeConv3d(coarse_channels, channels, up_stride, bias=False)
        self.down_keep = None  # the pooled channels after compact()
        self.down = StrideMaxPool3d(down_stride) if fine_channels > 0 else None
        width = 2 * channels + fine_channels
        self.fuse = nn.Sequential(
            *[
                ShiftConvBlock(width if i == 0 else channels, channels, 1, conv_mode, shift_groups)
                for i in range(num_blocks)
            ]
        )

    def compact(self, keep: Sequence[int]) -> None:
        """
        Drop the first fusion block's input channels but ``keep`` (ascending, over ``same | up | down``; see
        :meth:`ShiftConvBlock.compact`), and compute only the upsampled and pooled channels that are kept.
        """
        keep = [int(c) for c in keep]
        c, width = self.channels, self.fuse[0].shift.channels
        up = [k - c for k in keep if c <= k < 2 * c] or [0]  # the upsampling needs one output; it is not read
        down = [k - 2 * c for k in keep if k >= 2 * c]
        if self.down is not None:
            down = down or [0]
            self.down_keep = down
        self.up.select_outputs(up)
        present = list(range(c)) + [c + k for k in up] + [2 * c + k for k in (down if self.down is not None else [])]
        self.fuse[0].compact(keep, present if len(present) < width else None)

    def forward(self, same: torch.Tensor, coarse: torch.Tensor, fine: torch.Tensor | None = None) -> torch.Tensor:
        inputs = [same, self.up(coarse)]
        if self.down is not None and fine is not None:
            down_keep = self.down_keep
            inputs.append(self.down(fine if down_keep is None else fine[:, down_keep]))
        x = inputs[0]
        for i, block in enumerate(self.fuse):
            x = block.concat(inputs) if i == 0 else block(x)
        return x
