"""Validation post-processing the bundles' configs build: one-hot argmax (softmax models), thresholds (sigmoid)."""

from __future__ import annotations

from monai.transforms import Activationsd, AsDiscreted, Compose

from e2enet_monai.transforms.post import ArgMaxd

__all__ = ["onehot_postprocessing", "region_postprocessing"]


def onehot_postprocessing(num_classes: int) -> Compose:
    """Validation post-processing of softmax models: argmax prediction and label, both one-hot (for MeanDice)."""
    return Compose([
        ArgMaxd(keys="pred"),
        AsDiscreted(keys="pred", to_onehot=num_classes),
        AsDiscreted(keys="label", to_onehot=num_classes),
    ])


def region_postprocessing() -> Compose:
    """Validation post-processing of sigmoid region models (BraTS): sigmoid then threshold at 0.5."""
    return Compose([Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5)])
