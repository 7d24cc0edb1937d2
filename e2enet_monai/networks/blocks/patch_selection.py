"""Candidate patch grid and top-k selection for top-k patch (NMSW-style) segmentation."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval

__all__ = ["CandidateGrid", "adaptive_k", "box_slices", "gumbel_topk", "topk_indices"]


def box_slices(origin: Sequence[int], size: Sequence[int]) -> tuple[slice, ...]:
    """Spatial slices of the box ``origin .. origin + size``."""
    return tuple(slice(o, o + r) for o, r in zip(origin, size))


@dataclass(frozen=True)
class CandidateGrid:
    """
    The windows sliding-window inference would visit, as a grid: candidate ``n`` (row-major over ``shape``) covers
    ``slices(n)``. Built with MONAI's own scan interval and ``dense_patch_slices`` (last window clamped to the edge),
    so the set of windows is exactly the sliding-window one.
    """

    image_size: tuple[int, ...]
    roi_size: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]  # window starts per spatial axis

    @classmethod
    def build(cls, image_size: Sequence[int], roi_size: Sequence[int], overlap: float | Sequence[float] = 0.5):
        """Grid of ``roi_size`` windows over ``image_size`` (each axis at least ``roi_size``) at ``overlap``."""
        image_size, roi_size = tuple(int(s) for s in image_size), tuple(int(r) for r in roi_size)
        if len(image_size) != len(roi_size) or any(s < r for s, r in zip(image_size, roi_size)):
            raise ValueError(f"image_size {image_size} must have one entry per roi_size axis {roi_size}, each at "
                             f"least as large (pad the image first).")
        overlaps = tuple(overlap) if isinstance(overlap, Sequence) else (float(overlap),) * len(roi_size)
        if any(not 0 <= o < 1 for o in overlaps):
            raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
        interval = _get_scan_interval(image_size, roi_size, len(roi_size), overlaps)
        windows = dense_patch_slices(image_size, roi_size, interval)
        starts = tuple(tuple(sorted({int(w[d].start) for w in windows})) for d in range(len(roi_size)))
        return cls(image_size, roi_size, starts)

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of window positions per axis (the score map's shape)."""
        return tuple(len(s) for s in self.starts)

    def __len__(self) -> int:
        return int(torch.Size(self.shape).numel())

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


def topk_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """
    Indices of the ``k`` highest scores per row, ties broken by the lower index (deterministic).

    Args:
        scores: ``(B, N)``.
    Returns:
        ``(B, k)`` long, each row in descending score order.
    """
    k = min(int(k), scores.shape[-1])
    # a stable descending sort gives a deterministic order for equal scores, unlike torch.topk
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]


def adaptive_k(scores: torch.Tensor, mass: float, k_min: int = 1, k_max: int | None = None) -> list[int]:
    """
    Per row, the smallest K whose top-K softmax probabilities sum to at least ``mass``, clipped to
    ``[k_min, k_max]`` (and to N).

    Args:
        scores: ``(B, N)`` logits.
    """
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}.")
    n = scores.shape[-1]
    k_max = n if k_max is None else min(int(k_max), n)
    if not 1 <= k_min <= k_max:
        raise ValueError(f"need 1 <= k_min <= k_max, got k_min={k_min}, k_max={k_max} (N={n}).")
    probs = torch.sort(torch.softmax(scores.float(), dim=-1), dim=-1, descending=True).values
    reached = probs.cumsum(-1) >= mass - 1e-6
    ks = reached.float().argmax(-1) + 1  # first position reaching the mass
    return [int(min(max(k, k_min), k_max)) for k in ks.tolist()]


def gumbel_topk(scores: torch.Tensor, k: int, tau: float = 2 / 3, noise: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Gumbel top-k with straight-through gradients: one Gumbel noise draw per row, then K rounds of
    ``softmax((scores + noise) / tau)``, each taking the argmax and excluding it from later rounds.

    Args:
        scores: ``(B, N)`` logits.
        k: number of picks (at most N).
        tau: softmax temperature.
        noise: add Gumbel noise (training, or "sample" inference); without it the picks are the plain top-k.
        generator: random generator for the noise (reproducible sampling).

    Returns:
        ``indices`` ``(B, k)`` and ``weights`` ``(B, k)``: exactly 1 in the forward pass, with the gradient of each
        pick's soft probability (straight-through), so multiplying a patch by its weight passes gradients back to
        the scores.
    """
    b, n = scores.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (the number of candidates), got {k}.")
    logits = scores
    if noise:
        uniform = torch.rand(scores.shape, generator=generator, device="cpu", dtype=torch.float32)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1 - 1e-7))).to(scores)
        logits = scores + gumbel
    taken = torch.zeros(b, n, dtype=torch.bool, device=scores.device)
    indices, weights = [], []
    for _ in range(k):
        soft = torch.softmax((logits / tau).masked_fill(taken, float("-inf")), dim=-1)
        pick = soft.detach().argmax(-1)
        soft_pick = soft.gather(-1, pick[:, None])[:, 0]
        weights.append(soft_pick - soft_pick.detach() + 1.0)  # exactly 1 in value
        indices.append(pick)
        taken = taken | F.one_hot(pick, n).bool()
    return torch.stack(indices, dim=1), torch.stack(weights, dim=1)
