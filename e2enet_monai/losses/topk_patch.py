"""Training loss of top-k patch segmentation (NMSWNet): aggregated, coarse and local terms minus a score entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.losses import DiceCELoss

from e2enet_monai.networks.nets.nmsw import NMSWOutput
from e2enet_monai.utils.patches import box_slices, shrink_label

__all__ = ["TopKPatchLoss"]


class TopKPatchLoss(nn.Module):
    """
    ``L = seg(pred, y) + seg(coarse, y_coarse) + seg(local, y_patches) - entropy_weight * H(softmax(scores))`` with
    ``seg`` a segmentation loss (MONAI ``DiceCELoss`` by default), ``y_coarse`` the label zero-padded like the
    network's input and sampled at the centre of every ``downsample`` block (nearest), and ``y_patches`` the label
    boxes of the local patches. Scores get no direct supervision; the entropy term keeps them from collapsing early.

    Args:
        downsample: the network's ``downsample``.
        loss: segmentation loss taking ``(logits, label)``; default ``DiceCELoss(to_onehot_y=True, softmax=True)``.
        entropy_weight: weight of the score entropy (subtracted).

    Shape: ``output`` is :class:`~e2enet_monai.networks.NMSWOutput` (the training forward of ``NMSWNet``), ``label``
    ``(B, 1, *S)`` (class indices) or ``(B, C, *S)`` (sigmoid regions).
    """

    def __init__(self, downsample: int = 3, loss: nn.Module | None = None, entropy_weight: float = 1e-5) -> None:
        super().__init__()
        self.downsample = int(downsample)
        self.loss = loss if loss is not None else DiceCELoss(to_onehot_y=True, softmax=True)
        self.entropy_weight = float(entropy_weight)

    def coarse_label(self, label: torch.Tensor, padded_size: Sequence[int], coarse_size: Sequence[int]) -> torch.Tensor:
        """Label at the coarse grid: padded at the end like the image, sampled at each block's centre voxel."""
        small = shrink_label(label, self.downsample, padded_size)
        return small[(..., *(slice(0, n) for n in coarse_size))]

    def forward(self, output: NMSWOutput, label: torch.Tensor) -> torch.Tensor:
        roi = tuple(output.local.shape[2:])
        local_label = torch.stack(
            [label[(b, slice(None), *box_slices(org, roi))] for b, org in output.local_boxes]
        )
        coarse = output.coarse
        probs = torch.softmax(output.scores.float(), dim=-1)
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
        return (
            self.loss(output.pred, label)
            + self.loss(coarse, self.coarse_label(label, output.padded_size, coarse.shape[2:]))
            + self.loss(output.local, local_label)
            - self.entropy_weight * entropy
        )
