"""Top-k patch inference: refine only the K most useful sliding-window patches of a volume."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

from e2enet_monai.networks.blocks.patch_aggregation import PatchAccumulator
from e2enet_monai.networks.blocks.patch_selection import adaptive_k, gumbel_topk, topk_indices
from e2enet_monai.utils.patches import CandidateGrid, box_slices, upsample_region

__all__ = ["MODES", "OUTPUTS", "SELECTIONS", "TopKPatchInferer", "TopKPatchModel", "coarse_uncertainty_scores",
           "topk_patch_inference"]

MODES = ("topk", "sample")
OUTPUTS = ("logits", "labels")
SELECTIONS = ("learned", "uncertainty")


@runtime_checkable
class TopKPatchModel(Protocol):
    """What top-k patch inference needs from a model (:class:`~e2enet_monai.networks.NMSWNet` provides it)."""

    roi_size: tuple[int, ...]
    overlap: float
    k: int
    downsample: int
    sigmoid: bool

    def global_forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, in, *S)`` -> coarse logits ``(B, C, *s)`` and the score feature."""

    def candidate_scores(self, coarse: torch.Tensor, feature: torch.Tensor, grid: CandidateGrid) -> torch.Tensor:
        """Score logits ``(B, N)`` of the candidates of ``grid``."""

    def local_forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(n, in, *roi)`` -> local logits ``(n, C, *roi)``."""

    def fuse(self, patch_logits: torch.Tensor, coarse_logits: torch.Tensor) -> torch.Tensor:
        """Fused logits ``(n, C, *roi)`` of patch and upsampled coarse logits."""

    def importance_map(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Blending weights ``(*roi)``."""


def _check_settings(k: int | None, mode: str, patch_batch_size: int, output: str, selection: str,
                    mass: float | None) -> None:
    if mode not in MODES or output not in OUTPUTS or selection not in SELECTIONS:
        raise ValueError(f"mode must be one of {MODES}, output one of {OUTPUTS} and selection one of {SELECTIONS}, "
                         f"got mode={mode!r}, output={output!r}, selection={selection!r}.")
    if selection == "uncertainty" and (mode != "topk" or mass is not None):
        raise ValueError(f"selection='uncertainty' ranks the candidates by summed coarse uncertainty, not by score "
                         f"logits: use it with mode='topk' and no mass (got mode={mode!r}, mass={mass}); for "
                         f"mode='sample' or mass use selection='learned' (topk_selection in the bundles).")
    if (k is not None and int(k) < 0) or int(patch_batch_size) < 1:
        raise ValueError(f"k must be >= 0 and patch_batch_size >= 1, got k={k}, patch_batch_size={patch_batch_size}.")


def _select(scores: torch.Tensor, k: int, mode: str, seed: int, mass: float | None, k_min: int,
            k_max: int | None) -> list[list[int]]:
    """Chosen candidate indices per volume (ascending) from score logits ``(B, N)``."""
    if mass is not None:
        ks = adaptive_k(scores, mass, k_min, k_max)
    else:
        ks = [min(k, scores.shape[1])] * scores.shape[0]
    if mode == "topk":
        order = topk_indices(scores, max(ks))
    else:
        generator = torch.Generator().manual_seed(seed)
        order = gumbel_topk(scores.detach().float(), max(ks), noise=True, generator=generator)[0]
    return [sorted(int(i) for i in order[b, :kb]) for b, kb in enumerate(ks)]


def coarse_uncertainty_scores(coarse: torch.Tensor, grid: CandidateGrid, downsample: int,
                              sigmoid: bool = False) -> torch.Tensor:
    """
    Candidate scores without the score head: the global network's uncertainty summed over each candidate's box,
    i.e. where a refined patch can change the coarse prediction most. Per coarse voxel ``1 - max_c p_c`` of the
    softmax, or for independent sigmoid channels the largest ``1 - |2 p - 1|``; summed over the coarse voxels the
    box touches.

    Shape: ``coarse`` ``(B, C, *s)`` (the grid's full-resolution size ``downsample`` times smaller) -> ``(B, N)``.
    """
    coarse = coarse.float()
    if sigmoid:
        uncertainty = (1 - (2 * torch.sigmoid(coarse) - 1).abs()).amax(1)
    else:
        uncertainty = 1 - torch.softmax(coarse, 1).amax(1)
    return grid.coarse_sums(uncertainty, downsample)


@torch.no_grad()
def topk_patch_inference(
    inputs: torch.Tensor,
    network: TopKPatchModel,
    k: int | None = None,
    mode: str = "topk",
    seed: int = 0,
    mass: float | None = None,
    k_min: int = 1,
    k_max: int | None = None,
    patch_batch_size: int = 4,
    progress: bool = False,
    output: str = "logits",
    selection: str = "learned",
) -> tuple[torch.Tensor, list[tuple[list[int], CandidateGrid]]]:
    """
    Segment whole volumes with a top-k patch model: pad to at least ``roi_size`` (symmetric, as sliding window,
    cropped back at the end), global pass on the volume shrunk ``downsample`` times, one score per candidate window
    (the sliding-window grid of the model's ``roi_size`` at its ``overlap``), pick K, run the local network on the
    picked full-resolution patches in mini-batches of ``patch_batch_size``, fuse each with the coarse prediction of
    its box and blend them with the model's importance map (:class:`~e2enet_monai.networks.blocks.PatchAccumulator`).
    Voxels no patch covers keep the upsampled coarse prediction.

    Args:
        inputs: ``(B, C_in, *S)``, any ``S``.
        network: a :class:`TopKPatchModel`, e.g. :class:`~e2enet_monai.networks.NMSWNet`.
        k: patches per volume (clipped to the number of candidates); ``None``: the model's ``k``. ``0``: no patch,
            the global network alone (its coarse prediction upsampled): the fastest setting.
        mode: ``"topk"`` (deterministic: the K highest scores) or ``"sample"`` (Gumbel top-k sampling, seeded).
        seed: seed of ``"sample"`` mode (each call restarts it, so repeated calls agree).
        mass: optional adaptive K: per volume the smallest K whose selection probabilities sum to ``mass``,
            bounded by ``k_min`` and ``k_max`` (``k`` is then ignored).
        k_min: lower bound of adaptive K.
        k_max: upper bound of adaptive K (default: all candidates).
        patch_batch_size: patches per local-network call.
        progress: show a tqdm bar over patch batches.
        output: ``"logits"``, or ``"labels"``: the label map of those logits (argmax; every channel thresholded at
            0 for a sigmoid model), built one slab at a time, so only the refined patches' region is ever held as
            full-resolution class logits (see :class:`~e2enet_monai.networks.blocks.PatchAccumulator`).
        selection: what ranks the candidates: ``"learned"`` (the model's score head, NMSW's selection) or
            ``"uncertainty"`` (:func:`coarse_uncertainty_scores`: the global network's summed uncertainty per box,
            no score head; ``mode="topk"`` without ``mass`` only).

    Returns:
        logits ``(B, num_classes, *S)`` (float32), or labels (uint8, ``(B, 1, *S)``; ``(B, num_classes, *S)`` for
        a sigmoid model), and, per volume, the chosen candidate indices with their grid.
    """
    if not isinstance(network, TopKPatchModel):
        raise TypeError(f"top-k patch inference needs a top-k patch network (e.g. NMSWNet: global_forward, "
                        f"candidate_scores, local_forward, fuse, importance_map), got {type(network).__name__}; use "
                        f"SlidingWindowInferer for a plain segmenter.")
    _check_settings(k, mode, patch_batch_size, output, selection, mass)
    k = network.k if k is None else int(k)
    roi = tuple(int(r) for r in network.roi_size)
    if inputs.dim() != 2 + len(roi):
        raise ValueError(f"inputs must be (B, C, {', '.join(['S'] * len(roi))}) for roi_size {roi}, got shape "
                         f"{tuple(inputs.shape)}.")
    spatial = tuple(inputs.shape[2:])
    pads = [(max(r - s, 0) // 2, max(r - s, 0) - max(r - s, 0) // 2) for s, r in zip(spatial, roi)]
    x = F.pad(inputs, [v for p in reversed(pads) for v in p]) if any(sum(p) for p in pads) else inputs
    size = tuple(x.shape[2:])

    coarse, feature = network.global_forward(x)
    grid = CandidateGrid.build(size, roi, network.overlap)
    if k == 0 and mass is None:
        picks: list[list[int]] = [[] for _ in range(x.shape[0])]
    else:
        scores = (network.candidate_scores(coarse, feature, grid) if selection == "learned"
                  else coarse_uncertainty_scores(coarse, grid, network.downsample, bool(network.sigmoid)))
        picks = _select(scores.float(), k, mode, seed, mass, k_min, k_max)

    jobs = [(b, grid.origin(i)) for b, sel in enumerate(picks) for i in sel]
    blend = PatchAccumulator(x.shape[0], coarse.shape[1], size, network.importance_map(x.device, torch.float32), jobs)
    batches = [jobs[j : j + int(patch_batch_size)] for j in range(0, len(jobs), int(patch_batch_size))]
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="top-k patches")
    for batch in batches:
        local = network.local_forward(torch.cat([x[(slice(b, b + 1), slice(None), *box_slices(org, roi))]
                                                 for b, org in batch]))
        coarse_boxes = torch.cat([upsample_region(coarse[b : b + 1], org, roi, network.downsample)
                                  for b, org in batch])
        blend.add(network.fuse(local, coarse_boxes.to(local.dtype)), batch)
    if output == "labels":
        out = blend.labels(coarse.float(), network.downsample, sigmoid=bool(network.sigmoid))
    else:
        out = blend.result(coarse.float(), network.downsample)
    crop = (slice(None), slice(None), *(slice(a, a + s) for (a, _), s in zip(pads, spatial)))
    out = out[crop]
    if isinstance(inputs, MetaTensor):  # the input's metadata, as MONAI's sliding window returns it
        out = convert_to_dst_type(out, inputs, dtype=out.dtype)[0]
    return out, [(sel, grid) for sel in picks]


class TopKPatchInferer(Inferer):
    """
    Drop-in replacement for :class:`monai.inferers.SlidingWindowInferer` for a top-k patch model (e.g.
    :class:`~e2enet_monai.networks.NMSWNet`): ``inferer(inputs, network)`` returns logits of the input's spatial
    shape, but only ``k`` of the sliding-window patches go through the local network; the rest of the volume keeps
    the global network's upsampled coarse prediction. A thin wrapper of :func:`topk_patch_inference`; patch size,
    candidate overlap and shrink factor are the model's own. MONAI's inferer cannot serve: it runs every window.
    With ``k`` = all candidates and a fusion that keeps only the patch branch the result equals
    ``SlidingWindowInferer(roi_size, overlap=overlap, mode="gaussian")`` on the local network.

    Args:
        k: patches per volume; ``None``: the model's ``k``; ``0``: the global network alone.
        mode, seed, mass, k_min, k_max, patch_batch_size, progress, output, selection: as
            :func:`topk_patch_inference` (``output="labels"`` returns the uint8 label map, for a postprocessing that
            takes labels).

    After each call, ``last_selection`` holds, per batch item, the chosen candidate indices and the grid.
    """

    def __init__(
        self,
        k: int | None = None,
        mode: str = "topk",
        seed: int = 0,
        mass: float | None = None,
        k_min: int = 1,
        k_max: int | None = None,
        patch_batch_size: int = 4,
        progress: bool = False,
        output: str = "logits",
        selection: str = "learned",
    ) -> None:
        super().__init__()
        # at construction: a bad config fails before any work
        _check_settings(k, mode, patch_batch_size, output, selection, mass)
        self.k = None if k is None else int(k)
        self.mode = mode
        self.seed = int(seed)
        self.mass = mass
        self.k_min = int(k_min)
        self.k_max = k_max
        self.patch_batch_size = int(patch_batch_size)
        self.progress = progress
        self.output = output
        self.selection = selection
        self.last_selection: list[tuple[list[int], CandidateGrid]] = []

    def __call__(self, inputs: torch.Tensor, network: TopKPatchModel, *args: object, **kwargs: object) -> torch.Tensor:
        """``(B, C_in, *S)`` -> logits ``(B, num_classes, *S)`` (labels with ``output="labels"``)."""
        out, self.last_selection = topk_patch_inference(
            inputs, network, self.k, self.mode, self.seed, self.mass, self.k_min, self.k_max, self.patch_batch_size,
            self.progress, self.output, self.selection)
        return out
