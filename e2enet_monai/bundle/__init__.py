from e2enet_monai.bundle.checks import check_checkpoint, check_inference_run, check_training_run, inference_items
from e2enet_monai.bundle.distributed import shutdown_distributed
from e2enet_monai.bundle.helpers import (
    CPUStateDict,
    existing,
    load_weights,
    make_optimizer,
    onehot_postprocessing,
    region_postprocessing,
)
from e2enet_monai.bundle.overrides import check_cli_overrides
from e2enet_monai.bundle.packaging import package_bundle, update_index
from e2enet_monai.bundle.remote import BundleDownloadError, download

__all__ = [
    "BundleDownloadError",
    "CPUStateDict",
    "check_checkpoint",
    "check_cli_overrides",
    "check_inference_run",
    "check_training_run",
    "download",
    "existing",
    "inference_items",
    "load_weights",
    "make_optimizer",
    "onehot_postprocessing",
    "package_bundle",
    "region_postprocessing",
    "shutdown_distributed",
    "update_index",
]
