from e2enet_monai.inferers.ensemble import EnsembleInferer, mirror_flips
from e2enet_monai.inferers.topk import TopKPatchInferer, TopKPatchModel, topk_patch_inference

__all__ = ["EnsembleInferer", "TopKPatchInferer", "TopKPatchModel", "mirror_flips", "topk_patch_inference"]
