"""Per-tensor kernel densities for a global target density: ``uniform`` and Erdos-Renyi-Kernel (``erk``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from e2enet_monai.sparse.settings import check_sparse_settings

__all__ = ["kernel_densities"]


def kernel_densities(
    shapes: Mapping[str, Sequence[int]], density: float, distribution: str = "uniform"
) -> dict[str, float]:
    """
    Kernel density of every tensor so that the active weights make up ``density`` of all weights.

    A "kernel" is one ``(dim0, dim1)`` slice of a weight (one output x input channel connection of a conv or
    transposed conv), so a tensor of shape ``(a, b, *k)`` has ``a * b`` kernels of ``prod(k)`` weights each.

    Args:
        shapes: tensor name -> weight shape (at least 2-D).
        density: target fraction of active weights, in (0, 1].
        distribution: ``"uniform"`` (every tensor at ``density``) or ``"erk"`` (Erdos-Renyi at kernel
            granularity: density proportional to ``(a + b) / (a * b)``, tensors that would exceed 1 kept dense and
            the rest rescaled so the weighted mean is still ``density``).

    Returns:
        tensor name -> kernel density in (0, 1].
    """
    check_sparse_settings(density=density, distribution=distribution)
    for name, shape in shapes.items():
        if len(shape) < 2:
            raise ValueError(f"kernel masks need weights of at least 2 dims, {name!r} has shape {tuple(shape)}.")
    if distribution == "uniform" or density == 1.0:
        return {name: density for name in shapes}

    numel = {name: _prod(shape) for name, shape in shapes.items()}
    raw = {name: (shape[0] + shape[1]) / (shape[0] * shape[1]) for name, shape in shapes.items()}
    budget = density * sum(numel.values())
    dense: set[str] = set()
    while True:
        free = [n for n in shapes if n not in dense]
        remaining = budget - sum(numel[n] for n in dense)
        scale = remaining / sum(raw[n] * numel[n] for n in free)
        over = {n for n in free if scale * raw[n] > 1.0}
        if not over:
            break
        dense |= over
    return {name: 1.0 if name in dense else scale * raw[name] for name in shapes}


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out
