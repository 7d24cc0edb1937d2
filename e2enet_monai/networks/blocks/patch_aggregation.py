"""Blend fused patch logits into a volume; voxels no patch covers keep the upsampled coarse prediction."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence

import torch

from e2enet_monai.utils.patches import box_slices, upsample_region

__all__ = ["PatchAccumulator"]

Box = tuple[int, Sequence[int]]  # (batch index, origin)


def _cat(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim)


class PatchAccumulator:
    """
    The one aggregation of top-k patch segmentation, used by :class:`~e2enet_monai.networks.NMSWNet` in training and
    by :func:`~e2enet_monai.inferers.topk_patch_inference`: a ``weight_map``-weighted sum of patches (MONAI's
    Gaussian blending), normalised where any patch landed, the coarse logits upsampled elsewhere. Differentiable
    with respect to the patches.

    Only the refined region is ever held at full resolution: the volume is cut along every patch face into cells,
    and sums are kept for the cells that the declared ``boxes`` cover. :meth:`result` returns the dense logits;
    :meth:`labels` returns the label map one slab at a time, so a whole volume of class logits never exists (the same
    labels as ``result().argmax(1)``: every voxel gets the same floating-point operations in the same order).

    Args:
        batch: volumes B.
        channels: classes C.
        spatial: volume size S.
        weight_map: blending weights of one patch ``(*roi)``.
        boxes: every (batch index, origin) that :meth:`add` will be given.
        dtype: accumulation dtype.

    Shape: :meth:`add` takes patches ``(n, C, *roi)``; :meth:`result` returns ``(B, C, *S)``, :meth:`labels`
    ``(B, 1, *S)`` (or ``(B, C, *S)`` for independent sigmoid channels), uint8.
    """

    def __init__(self, batch: int, channels: int, spatial: Sequence[int], weight_map: torch.Tensor,
                 boxes: Sequence[Box], dtype: torch.dtype = torch.float32) -> None:
        self.batch, self.channels, self.spatial = int(batch), int(channels), tuple(int(s) for s in spatial)
        self.weight_map = weight_map.to(dtype)
        self.roi_size = tuple(weight_map.shape)
        self.dtype = dtype
        # every face of every box cuts its axis: each box is then a union of whole cells
        self.cuts = [sorted({0, size, *(int(o[a]) for _, o in boxes), *(int(o[a]) + r for _, o in boxes)})
                     for a, (size, r) in enumerate(zip(self.spatial, self.roi_size))]
        self.cells: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        device = weight_map.device
        for b, origin in boxes:
            for cell in self._cells_of(origin):
                if (b, *cell) not in self.cells:
                    shape = [self.cuts[a][i + 1] - self.cuts[a][i] for a, i in enumerate(cell)]
                    self.cells[(b, *cell)] = (torch.zeros((channels, *shape), device=device, dtype=dtype),
                                              torch.zeros((1, *shape), device=device, dtype=dtype))
        # (batch index, *leading cell indices) of the covered cells, every length: where _join must look deeper
        self._covered = {key[: n + 1] for key in self.cells for n in range(len(key))}

    def _cells_of(self, origin: Sequence[int]) -> Iterator[tuple[int, ...]]:
        """Indices (one interval per axis) of the cells the box at ``origin`` covers."""
        ranges = [range(cuts.index(int(o)), cuts.index(int(o) + r)) for cuts, o, r in
                  zip(self.cuts, origin, self.roi_size)]
        return itertools.product(*ranges)

    def _cell_box(self, cell: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        start = tuple(self.cuts[a][i] for a, i in enumerate(cell))
        return start, tuple(self.cuts[a][i + 1] - s for a, (i, s) in enumerate(zip(cell, start)))

    def add(self, patches: torch.Tensor, boxes: Sequence[Box]) -> None:
        """Add patch ``j`` of ``patches`` ``(n, C, *roi)`` at ``boxes[j]`` = (batch index, origin), one of the
        boxes declared at construction."""
        for patch, (b, origin) in zip(patches, boxes):
            for cell in self._cells_of(origin):
                start, size = self._cell_box(cell)
                local = box_slices([s - o for s, o in zip(start, origin)], size)
                total, count = self.cells[(b, *cell)]
                weight = self.weight_map[local]
                total += weight * patch[(slice(None), *local)].to(self.dtype)
                count += weight

    def _slabs(self, coarse: torch.Tensor, downsample: int) -> Iterator[tuple[int, int, torch.Tensor]]:
        """
        ``(z, depth, logits)``: the blended logits ``(B, C, depth, *S[1:])`` of one slab of depth ``roi[0]``.

        Without gradients the cells are written into the slab of upsampled coarse logits in place (no copy of the
        slab). With gradients the slab is joined from pieces (:meth:`_join`), whose backward pass hands each piece its
        own part of the gradient; that of an in-place write would copy the whole slab's gradient once per cell.
        """
        size = self.spatial
        slab = max(1, self.roi_size[0])
        differentiable = torch.is_grad_enabled() and any(total.requires_grad for total, _ in self.cells.values())
        for z in range(0, size[0], slab):
            depth = min(slab, size[0] - z)
            values = upsample_region(coarse, (z, *([0] * (len(size) - 1))), (depth, *size[1:]), downsample)
            values = values.to(self.dtype)
            if differentiable:
                bounds = [z, *(c for c in self.cuts[0] if z < c < z + depth), z + depth]
                volumes = []
                for b in range(self.batch):
                    layers = []
                    for lo, hi in itertools.pairwise(bounds):
                        cell = bisect.bisect_right(self.cuts[0], lo) - 1
                        layers.append(self._join(values[b : b + 1, :, lo - z : hi - z], b, (cell,),
                                                 lo - self.cuts[0][cell]))
                    volumes.append(_cat(layers, 2))
                yield z, depth, _cat(volumes, 0)
                continue
            for (b, *cell), (total, count) in self.cells.items():
                start, shape = self._cell_box(cell)
                lo, hi = max(z, start[0]), min(z + depth, start[0] + shape[0])
                if lo >= hi:
                    continue
                inside = (slice(None), slice(lo - start[0], hi - start[0]))  # the cell's own (C, d, ...) tensors
                region = (b, slice(None), slice(lo - z, hi - z), *box_slices(start[1:], shape[1:]))
                part = count[inside]
                values[region] = torch.where(part > 0, total[inside] / part.clamp_min(1e-12), values[region])
            yield z, depth, values

    def _join(self, values: torch.Tensor, b: int, cell: tuple[int, ...], offset: int) -> torch.Tensor:
        """
        Volume ``b``'s logits in the cell intervals ``cell`` of the first axes (the first from ``offset`` into its
        interval), every later axis whole: ``values`` ``(1, C, ...)`` (upsampled coarse) where no cell is covered,
        the cells' blended patches where one is; the same operations per voxel as the in-place write of
        :meth:`_slabs`.
        """
        axis = len(cell)
        if (b, *cell) not in self._covered:
            return values
        if axis == len(self.spatial):
            total, count = self.cells[(b, *cell)]
            inside = (slice(None), slice(offset, offset + values.shape[2]))
            part = count[inside]
            return torch.where(part > 0, total[inside] / part.clamp_min(1e-12), values)
        cuts = self.cuts[axis]
        return _cat([self._join(values.narrow(axis + 2, lo, hi - lo), b, (*cell, i), offset)
                     for i, (lo, hi) in enumerate(itertools.pairwise(cuts))], axis + 2)

    def result(self, coarse: torch.Tensor, downsample: int) -> torch.Tensor:
        """
        The blended volume ``(B, C, *S)``: weighted mean of the patches where any landed, ``coarse`` ``(B, C, *s)``
        (the global network's logits, ``S / s = downsample`` up to end padding) upsampled trilinearly elsewhere.
        """
        out = torch.empty((self.batch, self.channels, *self.spatial), device=coarse.device, dtype=self.dtype)
        for z, depth, values in self._slabs(coarse, downsample):
            out[:, :, z : z + depth] = values
        return out

    def labels(self, coarse: torch.Tensor, downsample: int, sigmoid: bool = False) -> torch.Tensor:
        """
        The label map of :meth:`result`, built slab by slab: the argmax ``(B, 1, *S)`` of the logits, or with
        ``sigmoid`` every channel thresholded at logit 0 (probability 0.5) ``(B, C, *S)``; uint8.
        """
        out = torch.empty((self.batch, self.channels if sigmoid else 1, *self.spatial), device=coarse.device,
                          dtype=torch.uint8)
        for z, depth, values in self._slabs(coarse, downsample):
            out[:, :, z : z + depth] = (values > 0) if sigmoid else values.argmax(1, keepdim=True)
        return out
