"""Fusion of a refined patch prediction with the coarse (upsampled global) prediction of the same region."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ClassGate", "ConvFusion", "PATCH_FUSIONS"]


class ClassGate(nn.Module):
    """
    Learned class-wise gate: ``fused = g * patch + (1 - g) * coarse`` with ``g = sigmoid(w_c)`` per class.

    Args:
        num_classes: C.
        init: initial gate logit (default 2.0, i.e. 88 % on the patch branch).

    Shape: ``patch`` and ``coarse`` ``(N, C, *roi)`` -> ``(N, C, *roi)``.
    """

    def __init__(self, num_classes: int, init: float = 2.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_classes,), float(init)))

    def forward(self, patch: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.weight).view(1, -1, *([1] * (patch.dim() - 2))).to(patch.dtype)
        return gate * patch + (1 - gate) * coarse


class ConvFusion(nn.Module):
    """
    Small convolutional fusion: ``patch + conv(cat(patch, coarse))`` with two 3x3x3 convolutions; its cost grows with
    C^2 per voxel, so the gate is the default.

    Shape: ``patch`` and ``coarse`` ``(N, C, *roi)`` -> ``(N, C, *roi)``.
    """

    def __init__(self, num_classes: int, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(2 * num_classes, hidden, 3, padding=1),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(hidden, num_classes, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # starts as the identity on the patch branch
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, patch: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return patch + self.net(torch.cat([patch, coarse], dim=1))


PATCH_FUSIONS = {"gate": ClassGate, "conv": ConvFusion}
