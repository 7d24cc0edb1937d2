from e2enet_monai.transforms.brats import BRATS_CONVENTIONS, BraTSRegionsd, RegionsToBraTSLabeld, ReorderChannelsd
from e2enet_monai.transforms.coarse import CoarseViewd
from e2enet_monai.transforms.io import SaveSegmentationd
from e2enet_monai.transforms.pipelines import brats_postprocessing, brats_transforms, ct_postprocessing, ct_transforms
from e2enet_monai.transforms.post import ArgMaxd, channel_argmax

__all__ = [
    "ArgMaxd",
    "BRATS_CONVENTIONS",
    "BraTSRegionsd",
    "CoarseViewd",
    "RegionsToBraTSLabeld",
    "ReorderChannelsd",
    "SaveSegmentationd",
    "brats_postprocessing",
    "brats_transforms",
    "channel_argmax",
    "ct_postprocessing",
    "ct_transforms",
]
