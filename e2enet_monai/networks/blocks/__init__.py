from e2enet_monai.networks.blocks.depth_shift import DepthShift, depth_shift_offsets
from e2enet_monai.networks.blocks.fusion_node import FusionNode
from e2enet_monai.networks.blocks.instance_norm import FastInstanceNorm3d
from e2enet_monai.networks.blocks.narrow_conv import NARROW_CHANNELS, NarrowConv3d
from e2enet_monai.networks.blocks.nnpack_conv import NNPACK_MODES
from e2enet_monai.networks.blocks.patch_aggregation import PatchAccumulator
from e2enet_monai.networks.blocks.patch_fusion import PATCH_FUSIONS, ClassGate, ConvFusion
from e2enet_monai.networks.blocks.patch_selection import adaptive_k, gumbel_topk, topk_indices
from e2enet_monai.networks.blocks.score_head import ScoreHead
from e2enet_monai.networks.blocks.shift_conv import CONV_MODES, FOLD_MIN_CHANNELS, ShiftConvBlock
from e2enet_monai.networks.blocks.stride_max_pool import StrideMaxPool3d
from e2enet_monai.networks.blocks.stride_transpose import StrideTransposeConv3d

__all__ = [
    "CONV_MODES",
    "ClassGate",
    "ConvFusion",
    "DepthShift",
    "FOLD_MIN_CHANNELS",
    "FastInstanceNorm3d",
    "FusionNode",
    "NARROW_CHANNELS",
    "NNPACK_MODES",
    "NarrowConv3d",
    "PATCH_FUSIONS",
    "PatchAccumulator",
    "ScoreHead",
    "ShiftConvBlock",
    "StrideMaxPool3d",
    "StrideTransposeConv3d",
    "adaptive_k",
    "depth_shift_offsets",
    "gumbel_topk",
    "topk_indices",
]
