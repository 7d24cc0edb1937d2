from e2enet_monai.inferers.ensemble import EnsembleInferer, mirror_axes_problem, mirror_flips
from e2enet_monai.inferers.runtime import BACKENDS, RuntimeInferer, exported_network
from e2enet_monai.inferers.topk import (
    TopKPatchInferer,
    TopKPatchModel,
    coarse_uncertainty_scores,
    topk_patch_inference,
)

__all__ = [
    "BACKENDS",
    "EnsembleInferer",
    "RuntimeInferer",
    "TopKPatchInferer",
    "TopKPatchModel",
    "coarse_uncertainty_scores",
    "exported_network",
    "mirror_axes_problem",
    "mirror_flips",
    "topk_patch_inference",
]
