"""Top-k selection of candidate patches (NMSW-style segmentation): deterministic, Gumbel, adaptive K."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["adaptive_k", "gumbel_topk", "topk_indices"]


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
