"""Top-k patch inference: refine only the K most useful sliding-window patches of a volume."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.inferers import Inferer

from e2enet_monai.networks.blocks.patch_selection import CandidateGrid, adaptive_k, gumbel_topk, topk_indices
from e2enet_monai.networks.nets.nmsw import upsample_region

__all__ = ["TopKPatchInferer"]

MODES = ("topk", "sample")


class TopKPatchInferer(Inferer):
    """
    Drop-in replacement for :class:`monai.inferers.SlidingWindowInferer` for an :class:`~e2enet_monai.networks.nets.
    NMSWNet`: ``inferer(inputs, network)`` returns logits of the input's spatial shape, but only ``k`` of the
    sliding-window patches go through the local network; the rest of the volume keeps the global network's
    upsampled coarse prediction. MONAI's inferer cannot serve: it runs every window.

    Steps: pad to at least ``roi_size`` (as sliding window does, then crop back), global pass on the volume shrunk
    ``downsample`` times, one score per candidate window, pick K, run the local network on the picked full-resolution
    patches in mini-batches of ``patch_batch_size``, fuse each with the coarse prediction of its box, blend with
    MONAI's Gaussian importance map. With ``k`` = all candidates and a fusion that keeps only the patch branch the
    result equals ``SlidingWindowInferer(roi_size, overlap=overlap, mode="gaussian")`` on the local network.

    Args:
        roi_size: patch size (must be the network's ``roi_size``).
        overlap: candidate-grid overlap, as sliding window.
        k: patches per volume (clipped to the number of candidates).
        downsample: global shrink factor (must be the network's ``downsample``).
        mode: ``"topk"`` (deterministic: the K highest scores) or ``"sample"`` (Gumbel top-k sampling, seeded).
        seed: seed of ``"sample"`` mode (each call restarts it, so repeated calls agree).
        mass: optional adaptive K: per volume the smallest K whose selection probabilities sum to ``mass``,
            bounded by ``k_min`` and ``k_max`` (``k`` is then ignored).
        k_min: lower bound of adaptive K.
        k_max: upper bound of adaptive K (default: all candidates).
        patch_batch_size: patches per local-network call.
        progress: show a tqdm bar over patch batches.

    After each call, ``last_selection`` holds, per batch item, the chosen candidate indices and the grid.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        overlap: float = 0.5,
        k: int = 5,
        downsample: int = 3,
        mode: str = "topk",
        seed: int = 0,
        mass: float | None = None,
        k_min: int = 1,
        k_max: int | None = None,
        patch_batch_size: int = 4,
        progress: bool = False,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if int(k) < 1 or int(patch_batch_size) < 1:
            raise ValueError(f"k and patch_batch_size must be >= 1, got k={k}, patch_batch_size={patch_batch_size}.")
        self.roi_size = tuple(int(r) for r in roi_size)
        self.overlap = float(overlap)
        self.k = int(k)
        self.downsample = int(downsample)
        self.mode = mode
        self.seed = int(seed)
        self.mass = mass
        self.k_min = int(k_min)
        self.k_max = k_max
        self.patch_batch_size = int(patch_batch_size)
        self.progress = progress
        self.last_selection: list[tuple[list[int], CandidateGrid]] = []

    def _check(self, inputs: torch.Tensor, network) -> None:
        if inputs.dim() != 2 + len(self.roi_size):
            raise ValueError(f"inputs must be (B, C, {', '.join(['S'] * len(self.roi_size))}) for roi_size "
                             f"{self.roi_size}, got shape {tuple(inputs.shape)}.")
        for attr in ("global_forward", "candidate_scores", "local_forward", "fuse", "importance_map"):
            if not hasattr(network, attr):
                raise TypeError(f"TopKPatchInferer needs a top-k patch network (e.g. NMSWNet) providing {attr}(), "
                                f"got {type(network).__name__}; use SlidingWindowInferer for a plain segmenter.")
        for name, theirs in (("roi_size", tuple(network.roi_size)), ("downsample", int(network.downsample))):
            if theirs != getattr(self, name):
                raise ValueError(f"inferer {name}={getattr(self, name)} differs from the network's {name}={theirs}; "
                                 f"the networks were trained for the latter.")

    def _pick(self, scores: torch.Tensor) -> list[list[int]]:
        n = scores.shape[1]
        if self.mass is not None:
            ks = adaptive_k(scores, self.mass, self.k_min, self.k_max)
        else:
            ks = [min(self.k, n)] * scores.shape[0]
        if self.mode == "topk":
            order = topk_indices(scores, max(ks))
        else:
            generator = torch.Generator().manual_seed(self.seed)
            order = gumbel_topk(scores.detach().float(), max(ks), noise=True, generator=generator)[0]
        return [sorted(int(i) for i in order[b, :kb]) for b, kb in enumerate(ks)]

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        """
        Args:
            inputs: ``(B, C_in, *S)``.
            network: an :class:`~e2enet_monai.networks.nets.NMSWNet` (or anything with its building blocks).

        Returns:
            logits ``(B, num_classes, *S)``.
        """
        self._check(inputs, network)
        spatial = tuple(inputs.shape[2:])
        # pad to at least roi_size like MONAI's sliding window (symmetric), cropped back at the end
        pad = [max(r - s, 0) for s, r in zip(spatial, self.roi_size)]
        pads = [(p // 2, p - p // 2) for p in pad]
        x = F.pad(inputs, [v for p in reversed(pads) for v in p]) if any(pad) else inputs
        size = tuple(x.shape[2:])

        coarse, feature = network.global_forward(x)
        grid = CandidateGrid.build(size, self.roi_size, self.overlap)
        selection = self._pick(network.candidate_scores(coarse, feature, grid).float())
        self.last_selection = [(sel, grid) for sel in selection]

        out = None
        count = x.new_zeros((x.shape[0], 1, *size), dtype=torch.float32)
        weight_map = network.importance_map(x.device, torch.float32)
        jobs = [(b, i) for b, sel in enumerate(selection) for i in sel]
        batches = [jobs[j : j + self.patch_batch_size] for j in range(0, len(jobs), self.patch_batch_size)]
        if self.progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="top-k patches")
        for batch in batches:
            boxes = [(b, grid.slices(i)) for b, i in batch]
            local = network.local_forward(torch.cat([x[(slice(b, b + 1), slice(None), *sl)] for b, sl in boxes]))
            coarse_boxes = torch.cat([upsample_region(coarse[b : b + 1], [s.start for s in sl], self.roi_size,
                                                      self.downsample) for b, sl in boxes])
            fused = network.fuse(local, coarse_boxes.to(local.dtype)).float()
            if out is None:
                out = x.new_zeros((x.shape[0], fused.shape[1], *size), dtype=torch.float32)
            for j, (b, sl) in enumerate(boxes):
                out[(b, slice(None), *sl)] += weight_map * fused[j]
                count[(b, slice(None), *sl)] += weight_map
        if out is None:
            out = x.new_zeros((x.shape[0], coarse.shape[1], *size), dtype=torch.float32)
        # normalise covered voxels; the rest takes the coarse prediction, upsampled one slab at a time
        slab = max(1, self.roi_size[0])
        for z in range(0, size[0], slab):
            depth = min(slab, size[0] - z)
            region = (slice(None), slice(None), slice(z, z + depth))
            up = upsample_region(coarse, (z, *([0] * (len(size) - 1))), (depth, *size[1:]), self.downsample).float()
            covered = count[region] > 0
            out[region] = torch.where(covered, out[region] / count[region].clamp_min(1e-12), up)
        crop = (slice(None), slice(None), *(slice(a, a + s) for (a, _), s in zip(pads, spatial)))
        return out[crop]
