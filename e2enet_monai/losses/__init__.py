from e2enet_monai.losses.deep_supervision import deep_supervision_dice_ce

__all__ = ["deep_supervision_dice_ce"]
