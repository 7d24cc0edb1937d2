"""What the bundles' configs call: input and checkpoint checks, weights, optimizers, post-processing, teardown, and
the CPU allocator setting."""

from e2enet_monai.bundle.checks import (
    check_checkpoint,
    check_inference_run,
    check_sparse_training,
    check_spatial_ids,
    check_training_run,
    check_weights_fit_configs,
    inference_items,
)
from e2enet_monai.bundle.distributed import shutdown_distributed
from e2enet_monai.bundle.optim import make_optimizer
from e2enet_monai.bundle.overrides import check_cli_overrides
from e2enet_monai.bundle.postprocessing import onehot_postprocessing, region_postprocessing
from e2enet_monai.bundle.references import existing
from e2enet_monai.bundle.registry import SHIPPED_BUNDLES, BundleInfo, bundle_path, bundles_dir
from e2enet_monai.bundle.weights import CPUStateDict, fold_checkpoints, load_ensemble, load_weights
from e2enet_monai.utils.memory import reuse_freed_memory

__all__ = [
    "SHIPPED_BUNDLES",
    "BundleInfo",
    "CPUStateDict",
    "bundle_path",
    "bundles_dir",
    "check_checkpoint",
    "check_cli_overrides",
    "check_inference_run",
    "check_sparse_training",
    "check_spatial_ids",
    "check_training_run",
    "check_weights_fit_configs",
    "existing",
    "fold_checkpoints",
    "inference_items",
    "load_ensemble",
    "load_weights",
    "make_optimizer",
    "onehot_postprocessing",
    "region_postprocessing",
    "reuse_freed_memory",
    "shutdown_distributed",
]
