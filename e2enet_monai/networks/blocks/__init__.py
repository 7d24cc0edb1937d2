from e2enet_monai.networks.blocks.depth_shift import DepthShift, depth_shift_offsets
from e2enet_monai.networks.blocks.fusion_node import FusionNode
from e2enet_monai.networks.blocks.shift_conv import CONV_MODES, ShiftConvBlock

__all__ = ["CONV_MODES", "DepthShift", "FusionNode", "ShiftConvBlock", "depth_shift_offsets"]
