from e2enet_monai.losses.deep_supervision import deep_supervision_dice_ce
from e2enet_monai.losses.topk_patch import TopKPatchLoss

__all__ = ["TopKPatchLoss", "deep_supervision_dice_ce"]
