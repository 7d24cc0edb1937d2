"""
Patch geometry of top-k patch segmentation: the candidate window grid, box slices, end padding, and the shrink and
upsample maps between the full-resolution grid and the global network's grid. Plain tensor functions, no modules.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.data.utils import dense_patch_slices

__all__ = ["CandidateGrid", "box_slices", "coarse_box_slices", "pad_end", "padded_shape", "scan_interval",
           "shrink_image", "shrink_label", "upsample_region"]


def box_slices(origin: Sequence[int], size: Sequence[int]) -> tuple[slice, ...]:
    """Spatial slices of the box ``origin .. origin + size``."""
    return tuple(slice(o, o + r) for o, r in zip(origin, size))


def coarse_box_slices(origin: Sequence[int], size: Sequence[int], factor: int) -> tuple[slice, ...]:
    """Slices of the map ``factor`` times smaller that cover the full-resolution box ``origin .. origin + size``
    (every coarse voxel the box touches)."""
    return tuple(slice(o // factor, -(-(o + s) // factor)) for o, s in zip(origin, size))


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: Sequence[float]) -> tuple[int, ...]:
    """
    Step between window starts per axis, as MONAI's sliding window takes it: ``int(roi * (1 - overlap))`` (at least
    1), or one whole window where the window spans the axis.
    """
    return tuple(int(r) if int(r) == int(s) else max(1, int(r * (1 - o)))
                 for s, r, o in zip(image_size, roi_size, overlap))


@dataclass(frozen=True)
class CandidateGrid:
    """
    The windows sliding-window inference would visit, as a grid: candidate ``n`` (row-major over ``shape``) covers
    ``slices(n)``. The starts come from MONAI's ``dense_patch_slices`` (last window clamped to the edge) at
    :func:`scan_interval`, so the set of windows is exactly the one ``SlidingWindowInferer`` visits.
    """

    image_size: tuple[int, ...]
    roi_size: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]  # window starts per spatial axis

    @classmethod
    def build(cls, image_size: Sequence[int], roi_size: Sequence[int],
              overlap: float | Sequence[float] = 0.5) -> CandidateGrid:
        """Grid of ``roi_size`` windows over ``image_size`` (each axis at least ``roi_size``) at ``overlap``."""
        image_size, roi_size = tuple(int(s) for s in image_size), tuple(int(r) for r in roi_size)
        if len(image_size) != len(roi_size) or any(s < r for s, r in zip(image_size, roi_size)):
            raise ValueError(f"image_size {image_size} must have one entry per roi_size axis {roi_size}, each at "
                             f"least as large (pad the image first).")
        overlaps = tuple(overlap) if isinstance(overlap, Sequence) else (float(overlap),) * len(roi_size)
        if any(not 0 <= o < 1 for o in overlaps):
            raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
        windows = dense_patch_slices(image_size, roi_size, scan_interval(image_size, roi_size, overlaps))
        starts = tuple(tuple(sorted({int(w[d].start) for w in windows})) for d in range(len(roi_size)))
        return cls(image_size, roi_size, starts)

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of window positions per axis (the score map's shape)."""
        return tuple(len(s) for s in self.starts)

    def __len__(self) -> int:
        return math.prod(self.shape)

    def origin(self, index: int) -> tuple[int, ...]:
        """Start voxel of candidate ``index``."""
        pos = []
        for n in reversed(self.shape):
            pos.append(index % n)
            index //= n
        return tuple(s[p] for s, p in zip(self.starts, reversed(pos)))

    def slices(self, index: int) -> tuple[slice, ...]:
        """Spatial slices of candidate ``index``."""
        return box_slices(self.origin(index), self.roi_size)

    def origins(self) -> list[tuple[int, ...]]:
        """Start voxels of every candidate in index order."""
        return list(itertools.product(*self.starts))

    def coarse_sums(self, values: torch.Tensor, factor: int) -> torch.Tensor:
        """
        Per candidate, the sum of ``values`` over every voxel of the map ``factor`` times smaller that its box touches
        (:func:`coarse_box_slices`).

        Shape: ``values`` ``(B, *s)`` -> ``(B, N)``.
        """
        return torch.stack([values[(slice(None), *coarse_box_slices(origin, self.roi_size, factor))].flatten(1).sum(1)
                            for origin in self.origins()], dim=1)


def padded_shape(spatial: Sequence[int], multiple: Sequence[int]) -> tuple[int, ...]:
    """``spatial`` rounded up, axis by axis, to a multiple of ``multiple``."""
    return tuple(int(math.ceil(s / m) * m) for s, m in zip(spatial, multiple))


def pad_end(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad the last ``len(size)`` axes of ``x`` at their end to ``size``."""
    pad = [p - s for s, p in zip(x.shape[-len(size):], size)]
    return F.pad(x, [v for p in reversed(pad) for v in (0, p)])


def shrink_image(image: torch.Tensor, downsample: int, size: Sequence[int]) -> torch.Tensor:
    """
    The global network's input: ``image`` zero-padded at the end to ``size`` (a multiple of ``downsample``) and
    average-pooled ``downsample`` times. Shape: ``([B,] C, *S)`` -> ``([B,] C, *size / downsample)``.
    """
    x = pad_end(image, size)
    return F.avg_pool3d(x, downsample) if downsample > 1 else x


def shrink_label(label: torch.Tensor, downsample: int, size: Sequence[int]) -> torch.Tensor:
    """
    The label on the global network's grid: zero-padded at the end to ``size`` like the image, then sampled at the
    centre voxel (index ``downsample // 2``) of every block.
    Shape: ``([B,] C, *S)`` -> ``([B,] C, *size / downsample)``.
    """
    first = downsample // 2
    return pad_end(label, size)[(..., *(slice(first, None, downsample),) * len(size))]


def upsample_region(coarse: torch.Tensor, origin: Sequence[int], size: Sequence[int], factor: int) -> torch.Tensor:
    """
    Trilinear upsampling (``align_corners=False``) of ``coarse`` by ``factor``, computed only for the full-resolution
    box ``origin .. origin + size``: equal to upsampling the whole map and cropping, at a fraction of the memory.

    Shape: ``coarse`` ``(B, C, d, h, w)`` -> ``(B, C, *size)``.
    """
    if factor == 1:
        return coarse[(..., *box_slices(origin, size))]
    lo = [max(0, o // factor - 1) for o in origin]
    hi = [min(n, -(-(o + s) // factor) + 1) for o, s, n in zip(origin, size, coarse.shape[2:])]
    crop = coarse[(..., *(slice(a, b) for a, b in zip(lo, hi)))]
    up = F.interpolate(crop, scale_factor=factor, mode="trilinear", align_corners=False)
    return up[(..., *(slice(o - a * factor, o - a * factor + s) for o, a, s in zip(origin, lo, size)))]
