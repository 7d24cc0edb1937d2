from e2enet_monai.inferers.topk import TopKPatchInferer, TopKPatchModel, topk_patch_inference

__all__ = ["TopKPatchInferer", "TopKPatchModel", "topk_patch_inference"]
