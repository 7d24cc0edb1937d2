"""E2ENet: a 3D segmentation CNN with a dynamic sparse feature fusion (DSFF) mesh and depth-shift convolutions."""

from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from e2enet_monai.networks.blocks import FusionNode, ShiftConvBlock

__all__ = ["E2ENet"]


class E2ENet(nn.Module):
    """
    E2ENet (Wu et al., "E2ENet: Dynamic Sparse Feature Fusion for Accurate and Efficient 3D Medical Image
    Segmentation", NeurIPS 2023/2024).

    - **Encoder**: ``len(channels)`` levels of two :class:`ShiftConvBlock` each, no residuals; the first block of
      every level but the first is strided by that level's entry of ``strides`` (no pooling layers).
    - **DSFF mesh**: nodes X(l, s) for levels ``l = 0 .. L-2`` and stages ``s = 1 .. L-1-l`` (15 nodes for L = 6),
      X(l, 0) being the encoder output. Each node fuses X(l, s-1), the transposed-conv upsampled X(l+1, s-1) and,
      for ``l >= 1``, the max-pooled X(l-1, s-1) (see :class:`FusionNode`); nodes on the last diagonal
      (``l + s = L - 1``) have a second fusion block. The mesh weights are what dynamic sparse training prunes.
    - **Heads**: 1x1x1 convolutions (no bias) on the last diagonal X(0, L-1), X(1, L-2), ...: full-resolution logits
      plus ``deep_supr_num`` lower-resolution ones for deep supervision.

    Args:
        spatial_dims: must be 3.
        in_channels: input channels (1 for CT, 4 for BraTS).
        out_channels: output channels (classes, background included for softmax models).
        channels: channels per level; default the paper's ``(48, 96, 192, 320, 320, 320)``.
        strides: stride per level, the first normally 1; an int or a 3-tuple each, so anisotropic levels such as
            ``(1, 2, 2)`` are allowed. Default ``(1, 2, 2, 2, 2, 2)``.
        shift_groups: channel groups of the depth shift (default 5: shifts -2..+2, as the released model).
        conv_mode: ``"shift"`` (default), ``"plain2d"`` ((1, 3, 3) without shift) or ``"conv3d"`` (3x3x3).
        deep_supervision: return the full-resolution and ``deep_supr_num`` lower-resolution logits in training.
        deep_supr_num: number of lower-resolution heads, at most ``len(channels) - 2``; default
            ``min(3, len(channels) - 2)`` (the paper's 1/2, 1/4 and 1/8 heads).

    Shape:
        input ``(B, in_channels, D, H, W)`` with each spatial size divisible by the product of ``strides`` on that
        axis. In ``eval()`` (or without deep supervision) the output is ``(B, out_channels, D, H, W)`` logits. In
        ``train()`` with deep supervision it is a list of ``1 + deep_supr_num`` logits, full resolution first, each
        coarser one at the resolution of the next level (as MONAI's ``DeepSupervisionLoss`` expects).

    Example::

        net = E2ENet(spatial_dims=3, in_channels=1, out_channels=16)
        net.eval()
        logits = net(torch.rand(1, 1, 64, 64, 64))  # (1, 16, 64, 64, 64)
    """

    divisor: list[int]

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (48, 96, 192, 320, 320, 320),
        strides: Sequence[Sequence[int] | int] = (1, 2, 2, 2, 2, 2),
        shift_groups: int = 5,
        conv_mode: str = "shift",
        deep_supervision: bool = True,
        deep_supr_num: Optional[int] = None,
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"E2ENet is a 3D network: spatial_dims must be 3, got {spatial_dims}.")
        if len(channels) < 2 or len(channels) != len(strides):
            raise ValueError(
                f"channels and strides need one entry per level (at least 2 levels), got {len(channels)} channels "
                f"{tuple(channels)} and {len(strides)} strides {tuple(strides)}."
            )
        levels = len(channels)
        if deep_supr_num is None:
            deep_supr_num = min(3, levels - 2)
        if not 0 <= deep_supr_num <= levels - 2:
            raise ValueError(f"deep_supr_num must be in [0, {levels - 2}] for {levels} levels, got {deep_supr_num}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = tuple(int(c) for c in channels)
        self.strides = tuple(self._as_3tuple(s) for s in strides)
        self.deep_supervision = deep_supervision
        self.deep_supr_num = deep_supr_num
        # product of strides per axis: the input size must be divisible by it
        self.divisor = [int(v) for v in np.prod(np.asarray(self.strides), axis=0)]

        block_args = {"conv_mode": conv_mode, "shift_groups": shift_groups}
        self.encoder = nn.ModuleList()
        for level, (ch, stride) in enumerate(zip(self.channels, self.strides)):
            ch_in = in_channels if level == 0 else self.channels[level - 1]
            self.encoder.append(
                nn.Sequential(ShiftConvBlock(ch_in, ch, stride, **block_args), ShiftConvBlock(ch, ch, 1, **block_args))
            )

        # mesh[s - 1][l] is node X(l, s)
        self.mesh = nn.ModuleList()
        for stage in range(1, levels):
            nodes = nn.ModuleList()
            for level in range(levels - stage):
                nodes.append(
                    FusionNode(
                        channels=self.channels[level],
                        coarse_channels=self.channels[level + 1],
                        fine_channels=self.channels[level - 1] if level > 0 else 0,
                        up_stride=self.strides[level + 1],
                        down_stride=self.strides[level],
                        num_blocks=2 if level + stage == levels - 1 else 1,
                        **block_args,
                    )
                )
            self.mesh.append(nodes)

        # heads[i] reads X(i, L-1-i), at 1 / 2**i resolution for isotropic strides
        num_heads = 1 + deep_supr_num
        self.heads = nn.ModuleList(
            [nn.Conv3d(self.channels[i], out_channels, kernel_size=1, bias=False) for i in range(num_heads)]
        )
        self._init_weights()

    @staticmethod
    def _as_3tuple(stride: Sequence[int] | int) -> tuple[int, int, int]:
        values = (int(stride),) * 3 if isinstance(stride, int) else tuple(int(s) for s in stride)
        if len(values) != 3 or min(values) < 1:
            raise ValueError(f"each stride must be a positive int or a sequence of 3 positive ints, got {stride!r}.")
        return values  # type: ignore[return-value]

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(module.weight, a=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def mesh_parameter_names(self) -> list[str]:
        """Names of the DSFF mesh weights (fusion convs and transposed convs), the tensors sparse training masks."""
        return [
            name
            for name, param in self.named_parameters()
            if name.startswith("mesh.") and name.endswith("weight") and param.dim() == 5
        ]

    def compact(self, keep: Mapping[str, Sequence[int]]) -> None:
        """
        Shrink mesh fusion blocks to the input channels they use, in place: ``keep`` maps a block name (e.g.
        ``"mesh.0.1.fuse.0"``, a :class:`ShiftConvBlock` of the mesh) to the input channels (ascending) it keeps,
        counted over the block's full input (for a node's first block, the concatenation ``same | up | down``).
        A node's first block also makes its transposed convolution compute, and its max-pooling pool, only the
        channels kept. The output is unchanged when the weights of the dropped channels are zero, as after
        channel-structured sparse training (``e2enet_monai.sparse.compact_model`` derives ``keep`` from the
        masks). The state dict then holds the smaller convolutions; :meth:`compacted_channels` returns what to call
        ``compact`` with to rebuild the same shapes before loading it.
        """
        blocks = dict(self.named_modules())
        for name, channels in keep.items():
            block = blocks.get(name)
            if not name.startswith("mesh.") or not isinstance(block, ShiftConvBlock):
                raise ValueError(f"E2ENet.compact: {name!r} is not a fusion block of the mesh (expected names like "
                                 f"'mesh.0.1.fuse.0').")
            if block.shift.keep is not None:
                raise ValueError(f"E2ENet.compact: {name!r} is already compacted.")
            if name.endswith(".fuse.0"):  # a node's first block: its upsampling and pooling shrink with it
                blocks[name[: -len(".fuse.0")]].compact(channels)
            else:
                block.compact(channels)

    def compacted_channels(self) -> dict[str, list[int]]:
        """The kept input channels of every compacted mesh block (empty for a full network)."""
        return {name: list(module.shift.keep) for name, module in self.named_modules()
                if isinstance(module, ShiftConvBlock) and module.shift.keep is not None}

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected and received shapes if ``x`` cannot go through the network."""
        shape = list(x.shape)
        if len(shape) != 5:
            raise ValueError(
                f"E2ENet expects a 5-D input (B, {self.in_channels}, D, H, W), got {len(shape)}-D shape {shape}."
            )
        if shape[1] != self.in_channels:
            raise ValueError(
                f"E2ENet expects {self.in_channels} input channel(s), got {shape[1]} (input shape {shape})."
            )
        for size, div in zip(shape[2:], self.divisor):
            if size % div != 0:
                raise ValueError(
                    f"E2ENet expects each spatial size to be divisible by {self.divisor} (the product of the "
                    f"strides per axis), got spatial shape {shape[2:]}; pad or crop the input first "
                    f"(e.g. with MONAI's DivisiblePadd)."
                )
        bottleneck = 1
        for size, div in zip(shape[2:], self.divisor):
            bottleneck *= size // div
        if bottleneck < 2:
            raise ValueError(
                f"E2ENet's bottleneck would hold a single voxel for spatial shape {shape[2:]} (strides multiply to "
                f"{self.divisor}); instance normalisation needs at least 2, so use a larger input or fewer levels."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        prev: list[torch.Tensor] = []
        for encoder_level in self.encoder:
            x = encoder_level(x)
            prev.append(x)
        diagonal: list[torch.Tensor] = []  # X(L-2, 1), X(L-3, 2), ..., X(0, L-1)
        for stage in self.mesh:
            cur: list[torch.Tensor] = []
            for level, node in enumerate(stage):
                fine = prev[level - 1] if level > 0 else None
                cur.append(node(prev[level], prev[level + 1], fine))
            diagonal.append(cur[-1])
            prev = cur
        full = self.heads[0](diagonal[-1])
        if not (self.training and self.deep_supervision):
            return full
        outputs = [full]
        for i, head in enumerate(self.heads):
            if i > 0:
                outputs.append(head(diagonal[-1 - i]))
        return outputs
