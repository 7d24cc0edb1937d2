"""The training loss of the E2ENet recipe, assembled from MONAI's losses."""

from __future__ import annotations

from monai.losses import DeepSupervisionLoss, DiceCELoss

__all__ = ["deep_supervision_dice_ce"]


def deep_supervision_dice_ce(num_outputs: int = 4, sigmoid: bool = False, batch_dice: bool = False
                             ) -> DeepSupervisionLoss:
    """
    Dice + cross-entropy (1:1) over deep-supervision outputs weighted ``2**(n-1-i)`` normalised to sum to 1
    ([8, 4, 2, 1] / 15 for 4 outputs); MONAI's ``DeepSupervisionLoss`` downsamples the target to each output.

    Args:
        num_outputs: outputs of the network in training (1 + ``deep_supr_num`` for E2ENet).
        sigmoid: multi-label regions (BraTS: sigmoid, Dice over every channel, BCE) instead of softmax classes
            (one-hot targets, background left out of the Dice term).
        batch_dice: one Dice per class over the whole batch of patches instead of one per patch, as nnU-Net does
            for the full-resolution 3D network of large CT volumes: a small organ missing from one patch then no
            longer scores that patch 0 Dice however little of it is predicted, which taught short runs never to
            predict small organs at all.
    """
    if sigmoid:
        base = DiceCELoss(sigmoid=True, include_background=True, batch=batch_dice, smooth_nr=1e-5, smooth_dr=1e-5)
    else:
        base = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=batch_dice,
                          smooth_nr=1e-5, smooth_dr=1e-5)
    raw = [2.0 ** (num_outputs - 1 - i) for i in range(num_outputs)]
    return DeepSupervisionLoss(base, weights=[w / sum(raw) for w in raw])
