from e2enet_monai.inferers.ensemble import EnsembleInferer, mirror_flips
from e2enet_monai.inferers.runtime import BACKENDS, RuntimeInferer, exported_network
from e2enet_monai.inferers.topk import TopKPatchInferer, TopKPatchModel, topk_patch_inference

__all__ = [
    "BACKENDS",
    "EnsembleInferer",
    "RuntimeInferer",
    "TopKPatchInferer",
    "TopKPatchModel",
    "exported_network",
    "mirror_flips",
    "topk_patch_inference",
]
