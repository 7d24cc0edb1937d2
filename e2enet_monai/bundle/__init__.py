from e2enet_monai.bundle.distributed import shutdown_distributed
from e2enet_monai.bundle.helpers import (
    CPUStateDict,
    existing,
    image_datalist,
    load_weights,
    make_optimizer,
    onehot_postprocessing,
    region_postprocessing,
)
from e2enet_monai.bundle.overrides import check_cli_overrides

__all__ = [
    "CPUStateDict",
    "check_cli_overrides",
    "existing",
    "image_datalist",
    "load_weights",
    "make_optimizer",
    "onehot_postprocessing",
    "region_postprocessing",
    "shutdown_distributed",
]
