from e2enet_monai.data.labels import AMOS_LABELS, BRATS_LABELS, BTCV_LABELS
from e2enet_monai.data.phantoms import brats_phantom, ct_phantom, write_synthetic
from e2enet_monai.data.prepare import DatasetError, brats_image_lists, check_case, load_split, prepare_dataset
from e2enet_monai.data.sampler import ResumableRandomSampler

__all__ = [
    "AMOS_LABELS",
    "BRATS_LABELS",
    "BTCV_LABELS",
    "DatasetError",
    "ResumableRandomSampler",
    "brats_image_lists",
    "brats_phantom",
    "check_case",
    "ct_phantom",
    "load_split",
    "prepare_dataset",
    "write_synthetic",
]
