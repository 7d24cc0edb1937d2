"""Score head of top-k patch segmentation: one logit per candidate patch from a global-network feature map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ScoreHead"]


class ScoreHead(nn.Module):
    """
    Resize a feature map to the candidate grid (trilinear), then 1x1x1 convolutions with LeakyReLU down to one channel.

    Args:
        in_channels: channels of the feature map.
        hidden: channels of the hidden 1x1x1 layers.

    Shape: ``feature`` ``(B, in_channels, d, h, w)`` and ``grid_shape`` ``(n0, n1, n2)`` -> ``(B, n0 * n1 * n2)``.
    """

    def __init__(self, in_channels: int, hidden: Sequence[int] = (32, 16)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for h in hidden:
            layers += [nn.Conv3d(ch, h, 1), nn.LeakyReLU(0.01, inplace=True)]
            ch = h
        layers.append(nn.Conv3d(ch, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, feature: torch.Tensor, grid_shape: Sequence[int]) -> torch.Tensor:
        resized = F.interpolate(feature, size=tuple(grid_shape), mode="trilinear", align_corners=False)
        return self.net(resized).flatten(1)
