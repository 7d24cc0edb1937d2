"""Blend fused patch logits into a volume; voxels no patch covers keep the upsampled coarse prediction."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from e2enet_monai.utils.patches import box_slices, upsample_region

__all__ = ["PatchAccumulator"]


class PatchAccumulator:
    """
    The one aggregation of top-k patch segmentation, used by :class:`~e2enet_monai.networks.NMSWNet` in training and
    by :func:`~e2enet_monai.inferers.topk_patch_inference`: a ``weight_map``-weighted sum of patches (MONAI's
    Gaussian blending), normalised where any patch landed, the coarse logits upsampled one slab at a time elsewhere,
    so the full-resolution coarse map is never held whole. Differentiable with respect to the patches.

    Args:
        batch: volumes B.
        channels: classes C.
        spatial: volume size S.
        weight_map: blending weights of one patch ``(*roi)``.
        dtype: accumulation dtype.

    Shape: :meth:`add` takes patches ``(n, C, *roi)``; :meth:`result` returns ``(B, C, *S)``.
    """

    def __init__(self, batch: int, channels: int, spatial: Sequence[int], weight_map: torch.Tensor,
                 dtype: torch.dtype = torch.float32) -> None:
        self.weight_map = weight_map.to(dtype)
        self.roi_size = tuple(weight_map.shape)
        device = weight_map.device
        self.total = torch.zeros((batch, channels, *spatial), device=device, dtype=dtype)
        self.count = torch.zeros((batch, 1, *spatial), device=device, dtype=dtype)

    def add(self, patches: torch.Tensor, boxes: Sequence[tuple[int, Sequence[int]]]) -> None:
        """Add patch ``j`` of ``patches`` ``(n, C, *roi)`` at ``boxes[j]`` = (batch index, origin)."""
        for patch, (b, origin) in zip(patches, boxes):
            region = (b, slice(None), *box_slices(origin, self.roi_size))
            self.total[region] += self.weight_map * patch.to(self.total.dtype)
            self.count[region] += self.weight_map

    def result(self, coarse: torch.Tensor, downsample: int) -> torch.Tensor:
        """
        The blended volume ``(B, C, *S)``: weighted mean of the patches where any landed, ``coarse`` ``(B, C, *s)``
        (the global network's logits, ``S / s = downsample`` up to end padding) upsampled trilinearly elsewhere.
        Call once; the accumulator's buffer becomes the result.
        """
        size = self.total.shape[2:]
        slab = max(1, self.roi_size[0])
        for z in range(0, size[0], slab):
            depth = min(slab, size[0] - z)
            region = (slice(None), slice(None), slice(z, z + depth))
            up = upsample_region(coarse, (z, *([0] * (len(size) - 1))), (depth, *size[1:]), downsample)
            count = self.count[region]
            self.total[region] = torch.where(count > 0, self.total[region] / count.clamp_min(1e-12),
                                             up.to(self.total.dtype))
        return self.total
