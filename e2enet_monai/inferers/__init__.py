from e2enet_monai.inferers.topk import TopKPatchInferer

__all__ = ["TopKPatchInferer"]
