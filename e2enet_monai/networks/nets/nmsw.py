"""NMSW-Net: top-k patch segmentation ("no more sliding window") around any MONAI-style 3D segmenter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
from monai.data.utils import compute_importance_map

from e2enet_monai.networks.blocks.patch_aggregation import PatchAccumulator
from e2enet_monai.networks.blocks.patch_fusion import PATCH_FUSIONS
from e2enet_monai.networks.blocks.patch_selection import gumbel_topk
from e2enet_monai.networks.blocks.score_head import ScoreHead
from e2enet_monai.utils.patches import CandidateGrid, box_slices, padded_shape, shrink_image, upsample_region

__all__ = ["NMSWNet", "NMSWOutput"]

MASKED_SCORE = -1e4  # added to candidates with no coarse foreground: they come last, but can still be picked


def _first(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Full-resolution logits of a network that may return deep-supervision lists in training."""
    return output if isinstance(output, torch.Tensor) else output[0]


class NMSWOutput(NamedTuple):
    """
    What :meth:`NMSWNet.forward` returns (and :class:`~e2enet_monai.losses.TopKPatchLoss` takes).

    Attributes:
        pred: aggregated logits ``(B, C, *S)``.
        coarse: the global network's logits ``(B, C, *s)``.
        local: local logits ``(n, C, *roi)`` of the picked patches, then of the random ones.
        local_boxes: ``(batch index, origin)`` of each row of ``local``.
        scores: candidate score logits ``(B, N)``.
        padded_size: the padded full-resolution size that ``s`` is ``downsample`` times smaller than.
    """

    pred: torch.Tensor
    coarse: torch.Tensor
    local: torch.Tensor
    local_boxes: list[tuple[int, tuple[int, ...]]]
    scores: torch.Tensor
    padded_size: tuple[int, ...]


class NMSWNet(nn.Module):
    """
    Top-k patch segmentation after NMSW-Net (Jeon et al., "No More Sliding Window: Efficient 3D Medical Image
    Segmentation with Differentiable Top-k Patch Sampling", MICCAI 2025).

    A *global* network segments the volume shrunk ``downsample`` times (average pooling) and a :class:`ScoreHead`
    on one of its feature maps gives one score per candidate patch (the sliding-window grid of ``roi_size`` at
    ``overlap``). Candidates whose coarse prediction holds no foreground get a large negative bias (never fewer
    than ``k`` remain selectable). The ``k`` best patches are cut from the full-resolution image and segmented by the
    *local* network; each is fused with the upsampled coarse prediction of its box (learned class-wise gate by
    default), blended with a Gaussian importance map, and voxels no patch covers keep the upsampled coarse
    prediction.

    ``forward(image, label)`` is the training pass: it picks patches by Gumbel top-k with straight-through weights
    (the patch is multiplied by a weight that is 1 in value and carries its selection probability's gradient) plus
    ``random_patches`` random ones for the local loss, and gathers only those patches. In ``eval()`` it picks the
    plain top ``k`` and no random patches. Whole-volume inference (any size, patch mini-batches, no autograd) is
    :func:`e2enet_monai.inferers.topk_patch_inference` / :class:`~e2enet_monai.inferers.TopKPatchInferer`, built
    from the same blocks (:meth:`global_forward`, :meth:`candidate_scores`, :meth:`local_forward`, :meth:`fuse`)
    and the same :class:`~e2enet_monai.networks.blocks.PatchAccumulator`.

    Args:
        global_net: 3D segmenter for the downsampled volume (returns ``num_classes`` logits).
        local_net: 3D segmenter for full-resolution patches of ``roi_size`` (same classes).
        num_classes: output channels of both networks.
        roi_size: patch size of the local network.
        overlap: candidate-grid overlap (as sliding window).
        k: patches refined per volume; 0 (the global network alone) is an inference setting only.
        downsample: shrink factor of the global input.
        global_divisor: what each axis of the global input must be divisible by (e.g. E2ENet's ``divisor``);
            the full-resolution input is zero-padded at the end to a multiple of ``downsample * global_divisor``.
        feature_layer: name of the ``global_net`` submodule whose output feeds the score head (a late decoder
            feature); ``None`` uses the coarse logits.
        feature_channels: channels of that feature (required with ``feature_layer``).
        fusion: ``"gate"`` (class-wise gate, default) or ``"conv"`` (small conv fusion).
        sigmoid: the networks output independent sigmoid channels (BraTS regions) instead of softmax classes;
            decides what counts as coarse foreground.
        mask_background: bias candidates without coarse foreground down.
        tau: Gumbel-softmax temperature.
        random_patches: extra random patches per volume in training (local loss only), half of them centred on
            foreground when a label is given.
        sigma_scale: Gaussian blending sigma as a fraction of ``roi_size`` (MONAI's default 0.125).

    Shape:
        ``(B, in, *S)`` with ``S >= roi_size`` -> :class:`NMSWOutput` (``pred`` ``(B, C, *S)``, ``local``
        ``(B * (k + random_patches), C, *roi)`` in training).
    """

    def __init__(
        self,
        global_net: nn.Module,
        local_net: nn.Module,
        num_classes: int,
        roi_size: Sequence[int],
        overlap: float = 0.5,
        k: int = 5,
        downsample: int = 3,
        global_divisor: Sequence[int] | int = 1,
        feature_layer: str | None = None,
        feature_channels: int | None = None,
        fusion: str = "gate",
        sigmoid: bool = False,
        mask_background: bool = True,
        tau: float = 2 / 3,
        random_patches: int = 1,
        sigma_scale: float = 0.125,
    ) -> None:
        super().__init__()
        if fusion not in PATCH_FUSIONS:
            raise ValueError(f"fusion must be one of {sorted(PATCH_FUSIONS)}, got {fusion!r}.")
        if int(downsample) < 1 or int(k) < 0:
            raise ValueError(f"downsample must be >= 1 and k >= 0, got downsample={downsample}, k={k}.")
        if feature_layer is not None and feature_channels is None:
            raise ValueError(f"feature_layer={feature_layer!r} needs feature_channels (its channel count).")
        self.global_net = global_net
        self.local_net = local_net
        self.num_classes = int(num_classes)
        self.roi_size = tuple(int(r) for r in roi_size)
        self.overlap = float(overlap)
        self.k = int(k)
        self.downsample = int(downsample)
        div = (global_divisor,) * len(self.roi_size) if isinstance(global_divisor, int) else tuple(global_divisor)
        self.multiple = tuple(self.downsample * int(d) for d in div)
        self.sigmoid = sigmoid
        self.mask_background = mask_background
        self.tau = float(tau)
        self.random_patches = int(random_patches)
        self.sigma_scale = float(sigma_scale)
        self.score_head = ScoreHead(feature_channels if feature_layer is not None else self.num_classes)
        self.fusion = PATCH_FUSIONS[fusion](self.num_classes)
        self._feature: torch.Tensor | None = None
        self.feature_layer = feature_layer
        if feature_layer is not None:
            modules = dict(global_net.named_modules())
            if feature_layer not in modules:
                raise ValueError(f"feature_layer {feature_layer!r} is not a submodule of the global network; "
                                 f"some of its names: {list(modules)[1:8]} ...")
            modules[feature_layer].register_forward_hook(self._keep_feature)

    def _keep_feature(self, module: nn.Module, args, output) -> None:
        self._feature = _first(output)

    # building blocks, shared with topk_patch_inference
    def padded_size(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Full-resolution size the global pass works on: ``spatial`` rounded up to ``downsample * divisor``."""
        return padded_shape(spatial, self.multiple)

    def global_forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Coarse logits and the score feature of ``image`` ``(B, in, *S)``, zero-padded at the end to
        :meth:`padded_size` and average-pooled ``downsample`` times: ``(B, C, *s)`` and ``(B, F, *f)``.
        """
        x = shrink_image(image, self.downsample, self.padded_size(image.shape[2:]))
        self._feature = None
        coarse = _first(self.global_net(x))
        feature = coarse if self.feature_layer is None else self._feature
        self._feature = None
        return coarse, feature

    def foreground(self, coarse: torch.Tensor) -> torch.Tensor:
        """Coarse foreground ``(B, *s)`` bool: argmax > 0 (softmax) or any channel > 0.5 (sigmoid)."""
        return (coarse > 0).any(1) if self.sigmoid else coarse.argmax(1) > 0

    def candidate_scores(self, coarse: torch.Tensor, feature: torch.Tensor, grid: CandidateGrid) -> torch.Tensor:
        """Score logits ``(B, N)`` of the candidates of ``grid``, with the (gradient-free) background bias."""
        scores = self.score_head(feature, grid.shape)
        if not self.mask_background:
            return scores
        fg = self.foreground(coarse.detach())
        allowed = grid.coarse_sums(fg.float(), self.downsample) > 0
        return scores + (~allowed).to(scores.dtype) * MASKED_SCORE

    def local_forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Local logits of full-resolution patches ``(n, in, *roi)`` -> ``(n, C, *roi)``."""
        return _first(self.local_net(patches))

    def fuse(self, patch_logits: torch.Tensor, coarse_logits: torch.Tensor) -> torch.Tensor:
        """Fuse patch logits with the upsampled coarse logits of the same boxes, both ``(n, C, *roi)``."""
        return self.fusion(patch_logits, coarse_logits)

    def importance_map(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """MONAI's Gaussian importance map of ``roi_size`` (as ``SlidingWindowInferer(mode="gaussian")``)."""
        return compute_importance_map(self.roi_size, mode="gaussian", sigma_scale=self.sigma_scale, device=device,
                                      dtype=dtype)

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> NMSWOutput:
        """
        Args:
            image: ``(B, in, *S)``, ``S >= roi_size`` on every axis (a training canvas).
            label: ``(B, 1 or C, *S)``; in training, every other random patch is centred on its foreground.
        """
        spatial = tuple(image.shape[2:])
        if any(s < r for s, r in zip(spatial, self.roi_size)):
            raise ValueError(f"input spatial shape {spatial} must be at least roi_size {self.roi_size} on every "
                             f"axis (pad it, e.g. with MONAI's SpatialPadd; whole volumes of any size go through "
                             f"e2enet_monai.inferers.TopKPatchInferer).")
        if self.k == 0:
            raise ValueError("k=0 refines no patch, so the forward pass has nothing to train or blend; k=0 is for "
                             "inference (TopKPatchInferer), train with k >= 1.")
        coarse, feature = self.global_forward(image)
        grid = CandidateGrid.build(spatial, self.roi_size, self.overlap)
        scores = self.candidate_scores(coarse, feature, grid)
        k = min(self.k, len(grid))
        picks, weights = gumbel_topk(scores, k, tau=self.tau, noise=self.training)
        origins = grid.origins()
        boxes = [(b, origins[int(i)]) for b in range(image.shape[0]) for i in picks[b]]
        extra = self._random_boxes(grid, picks, label) if self.training else []
        patches = [image[(b, slice(None), *box_slices(org, self.roi_size))] for b, org in boxes + extra]
        patches[: len(boxes)] = [p * w for p, w in zip(patches, weights.flatten())]
        local = self.local_forward(torch.stack(patches))

        coarse_detached = coarse.detach()
        fused = self.fuse(local[: len(boxes)], torch.cat([
            upsample_region(coarse_detached[b : b + 1], org, self.roi_size, self.downsample) for b, org in boxes]))
        blend = PatchAccumulator(image.shape[0], self.num_classes, spatial,
                                 self.importance_map(image.device, local.dtype), boxes, dtype=local.dtype)
        blend.add(fused, boxes)
        return NMSWOutput(pred=blend.result(coarse_detached, self.downsample), coarse=coarse, local=local,
                          local_boxes=boxes + extra, scores=scores, padded_size=self.padded_size(spatial))

    def _random_boxes(self, grid: CandidateGrid, picks: torch.Tensor, label: torch.Tensor | None) -> list:
        """``random_patches`` extra candidates per volume not already picked; every other one holds foreground."""
        origins, boxes = grid.origins(), []
        for b in range(picks.shape[0]):
            free = sorted(set(range(len(grid))) - {int(i) for i in picks[b]})
            for j in range(self.random_patches):
                if not free:
                    break
                pool = free
                if label is not None and j % 2 == 0:
                    fg = [i for i in free if label[(b, slice(None), *grid.slices(i))].any()]
                    pool = fg or free
                choice = pool[int(torch.randint(len(pool), (1,)))]
                free.remove(choice)
                boxes.append((b, origins[choice]))
        return boxes
