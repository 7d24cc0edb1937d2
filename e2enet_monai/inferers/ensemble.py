"""
Mirror test-time augmentation and checkpoint ensembles around any inferer (sliding window or top-k): the
probabilities of every (network, flip) pair are averaged, as nnU-Net and E2ENet infer. MONAI's
``TestTimeAugmentation`` draws random invertible transforms through a data pipeline and reports their spread; it
has no deterministic mirror average over an inferer and several networks.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.inferers import Inferer

from e2enet_monai.utils.values import is_whole

__all__ = ["ACTIVATIONS", "EnsembleInferer", "mirror_axes_problem", "mirror_flips"]

ACTIVATIONS = ("softmax", "sigmoid")


def mirror_axes_problem(axes: Sequence[int]) -> str | None:
    """What is wrong with ``axes`` as mirror axes (they must be distinct spatial axes out of 0, 1, 2), or None."""
    if all(is_whole(a) for a in axes) and len(set(axes)) == len(axes) and set(axes) <= {0, 1, 2}:
        return None
    return f"must be distinct spatial axes out of 0, 1, 2, got {list(axes)}"


def mirror_flips(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial ``axes`` (0-based, of ``(X, Y, Z)``) as tensor dims of ``(B, C, X, Y, Z)``, the
    empty one (no flip) first: ``2 ** len(axes)`` flips."""
    dims = [int(a) + 2 for a in axes]
    return [combo for n in range(len(dims) + 1) for combo in itertools.combinations(dims, n)]


class EnsembleInferer(Inferer):
    """
    Average the probabilities of ``inferer`` over mirrored inputs and over several networks, and return them as
    logits of the same activation, so a postprocessing that applies ``activation`` gets the averaged probabilities:
    ``log(mean p)`` for softmax, ``logit(mean p)`` for sigmoid.

    Args:
        inferer: the inferer of one network, e.g. ``SlidingWindowInferer`` or ``TopKPatchInferer``; its outputs are
            ``(B, C, *S)`` logits.
        mirror_axes: spatial axes to flip (every subset of them; ``(0, 1, 2)`` gives 8 passes, ``()`` none).
        networks: the networks to average (fold checkpoints); ``None`` uses the network the engine passes.
        activation: ``"softmax"`` (one label per voxel) or ``"sigmoid"`` (overlapping regions, BraTS).

    With one network and no mirror axes the inner inferer's output is returned as it is.
    """

    def __init__(self, inferer: Inferer, mirror_axes: Sequence[int] = (), networks: Sequence[nn.Module] | None = None,
                 activation: str = "softmax") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
        problem = mirror_axes_problem(mirror_axes)
        if problem:
            raise ValueError(f"mirror_axes {problem}.")
        if networks is not None and len(networks) == 0:
            raise ValueError("networks is empty: give at least one network, or None for the engine's.")
        self.inferer = inferer
        self.flips = mirror_flips(mirror_axes)
        self.networks = list(networks) if networks is not None else None
        self.activation = activation

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), 1) if self.activation == "softmax" else torch.sigmoid(logits.float())

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``(B, in, *S)`` -> ``(B, C, *S)`` logits of the averaged probabilities."""
        members = self.networks if self.networks is not None else [network]
        if len(members) == 1 and len(self.flips) == 1:
            return self.inferer(inputs, members[0], *args, **kwargs)
        total: torch.Tensor | None = None
        for member in members:
            for dims in self.flips:
                x = torch.flip(inputs, dims) if dims else inputs
                p = self._probabilities(self.inferer(x, member, *args, **kwargs))
                p = torch.flip(p, dims) if dims else p
                total = p if total is None else total.add_(p)
        mean = total / (len(members) * len(self.flips))
        tiny = torch.finfo(mean.dtype).tiny
        if self.activation == "softmax":
            return torch.log(mean.clamp_min(tiny))
        mean = mean.clamp(tiny, 1 - torch.finfo(mean.dtype).eps)
        return torch.log(mean) - torch.log1p(-mean)
