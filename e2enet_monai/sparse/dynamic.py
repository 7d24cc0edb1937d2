"""Dynamic sparse training of kernel masks: prune the weakest kernels, regrow as many, on a decaying schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from e2enet_monai.sparse.masks import KernelMasks, channel_mask, input_channel_axis
from e2enet_monai.sparse.settings import check_sparse_settings

__all__ = ["DynamicSparsity", "cosine_death_rate"]


def cosine_death_rate(iteration: int, total: int, initial: float = 0.5, final: float = 0.001) -> float:
    """Cosine decay from ``initial`` at iteration 0 to ``final`` at ``total`` (constant afterwards)."""
    progress = min(max(iteration / max(total, 1), 0.0), 1.0)
    return final + 0.5 * (initial - final) * (1.0 + math.cos(math.pi * progress))


class DynamicSparsity:
    """
    Keeps selected weights of a model sparse at kernel granularity and updates which kernels are active.

    Call :meth:`after_step` after every ``optimizer.step()``: it zeroes inactive kernels in the weights and in the
    optimizer's per-weight state, counts the iteration and, every ``update_frequency`` iterations, prunes the
    ``ceil(death_rate * active)`` active kernels of smallest L1 norm of each tensor and regrows as many inactive
    ones (at zero), so every tensor keeps exactly its number of active kernels (whole channels: the nearest count,
    see :meth:`_prune_count`). With ``mask_gradients``, call
    :meth:`before_step` between ``backward()`` and ``optimizer.step()``. As in the paper, a kernel regrown at zero
    whose input channel is fed only by zero kernels (or whose output feeds only zero kernels) gets no gradient and
    stays zero until a later update prunes it.

    Args:
        model: the network; its masked weights are zeroed at construction.
        density: target fraction of active weights over the selected tensors, in (0, 1].
        distribution: ``"uniform"`` or ``"erk"`` (see :func:`~e2enet_monai.sparse.density.kernel_densities`).
        parameters: regular expressions selecting the tensors (default: the model's ``mesh_parameter_names()``).
        growth: ``"random"`` (uniform among inactive kernels) or ``"gradient"`` (largest gradient L1 norm).
        death_rate: initial fraction of active kernels replaced at an update, decayed by a cosine to
            ``final_death_rate`` over ``total_iterations``.
        final_death_rate: death rate at the end of training.
        update_frequency: iterations between mask updates.
        total_iterations: length of training (for the schedule); may be set later (e.g. by the ignite handler).
        mask_gradients: also zero the gradients of inactive kernels before each step.
        seed: seed of the initial masks and of random regrowth; the same seed gives the same masks.
        structure: ``"kernel"`` (the paper's: single kernels are pruned and regrown) or ``"channel"`` (whole input
            channels of each tensor, scored by the L1 norm of all their kernels, so that
            :func:`~e2enet_monai.sparse.compact_model` can turn the trained mesh into smaller dense convolutions).
        channel_multiple: with ``structure="channel"``, every tensor keeps a multiple of this many input channels
            (see :func:`~e2enet_monai.sparse.kept_channels`; 16 suits AVX-512 CPUs, 8 AVX2); updates keep the count.
    """

    def __init__(
        self,
        model: nn.Module,
        density: float = 0.2,
        distribution: str = "uniform",
        parameters: Sequence[str] | None = None,
        growth: str = "random",
        death_rate: float = 0.5,
        final_death_rate: float = 0.001,
        update_frequency: int = 1200,
        total_iterations: int | None = None,
        mask_gradients: bool = False,
        seed: int = 0,
        structure: str = "kernel",
        channel_multiple: int = 1,
    ) -> None:
        check_sparse_settings(density=density, distribution=distribution, growth=growth, death_rate=death_rate,
                              final_death_rate=final_death_rate, update_frequency=update_frequency,
                              structure=structure, channel_multiple=channel_multiple,
                              total_iterations=total_iterations)
        self.model = model
        self.growth = growth
        self.initial_death_rate = death_rate
        self.final_death_rate = final_death_rate
        self.update_frequency = update_frequency
        self.total_iterations = total_iterations
        self.mask_gradients = mask_gradients
        self.structure = structure
        self.masks = KernelMasks.random(model, density, distribution, parameters, seed=seed, structure=structure,
                                        channel_multiple=channel_multiple)
        self._axes = {name: input_channel_axis(model, name) for name in self.masks.masks}
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.iteration = 0
        self._grad_norms: dict[str, torch.Tensor] = {}
        self.masks.apply(model)

    def death_rate(self, iteration: int | None = None) -> float:
        """Death rate at ``iteration`` (default: the current one)."""
        total = self.total_iterations or 1
        return cosine_death_rate(self.iteration if iteration is None else iteration, total,
                                 self.initial_death_rate, self.final_death_rate)

    def _update_due(self) -> bool:
        done = self.total_iterations is not None and self.iteration >= self.total_iterations
        return self.iteration % self.update_frequency == 0 and not done

    @torch.no_grad()
    def before_step(self) -> None:
        """Zero the gradients of inactive kernels (only with ``mask_gradients``); dense gradient norms are kept
        first when a gradient-growth update follows this step."""
        if not self.mask_gradients:
            return
        if self.growth == "gradient" and (self.iteration + 1) % self.update_frequency == 0:
            self._grad_norms = self._kernel_grad_norms()
        self.masks.apply_to_gradients(self.model)

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer | None = None) -> dict | None:
        """Re-apply masks after an optimizer step; update them when due. Returns the update statistics or None."""
        self.masks.apply(self.model)
        if optimizer is not None:
            self.masks.apply_to_optimizer(self.model, optimizer)
        self.iteration += 1
        if not self._update_due():
            return None
        stats = self.update()
        if optimizer is not None:
            self.masks.apply_to_optimizer(self.model, optimizer)
        return stats

    def _kernel_grad_norms(self) -> dict[str, torch.Tensor]:
        norms = {}
        for name, param in self.masks.parameters_of(self.model).items():
            if param.grad is None:
                raise RuntimeError(f"gradient growth needs gradients, but {name!r} has none at the mask update.")
            # one L1 norm per kernel, summed over the kernel's own spatial dims whatever the layer type
            norms[name] = param.grad.detach().abs().flatten(2).sum(dim=2).float().cpu()
        return norms

    @torch.no_grad()
    def update(self) -> dict:
        """Prune and regrow every masked tensor once at the current death rate; return per-tensor statistics."""
        rate = self.death_rate()
        grads = self._grad_norms or (self._kernel_grad_norms() if self.growth == "gradient" else {})
        self._grad_norms = {}
        params = self.masks.parameters_of(self.model)
        pruned_total = 0
        for name, param in params.items():
            shape = self.masks.masks[name].shape
            mask = self._units(name, self.masks.masks[name])
            active = int(mask.sum())
            n = min(self._prune_count(rate, active), active)
            if n == 0:
                continue
            norms = self._units(name, param.detach().abs().flatten(2).sum(dim=2).float().cpu())
            norms[~mask] = float("inf")
            prune = torch.topk(norms, n, largest=False).indices
            inactive_before = (~mask).nonzero().flatten()
            mask[prune] = False
            # regrow among units that were inactive before this update (never the ones just pruned)
            if self.growth == "random":
                grow = inactive_before[torch.randperm(len(inactive_before), generator=self.generator)[:n]]
            else:
                scores = self._units(name, grads[name])[inactive_before]
                grow = inactive_before[torch.topk(scores, min(n, len(inactive_before))).indices]
            if len(grow) < n:  # not enough inactive units (density near 1): re-activate the pruned ones
                grow = torch.cat([grow, prune[: n - len(grow)]])
            mask[grow] = True
            self.masks.masks[name] = (mask.view(shape) if self.structure == "kernel"
                                      else channel_mask(mask, shape, self._axes[name]))
            pruned_total += n
        self.masks.apply(self.model)  # pruned kernels become 0, and regrown kernels start at 0
        return {
            "iteration": self.iteration,
            "death_rate": rate,
            "pruned": pruned_total,
            "regrown": pruned_total,
            "density": self.masks.kernel_density(),
        }

    def _prune_count(self, rate: float, active: int) -> int:
        """Units to prune of a tensor with ``active`` active units: kernels round up (the paper's), so every tensor
        changes at every update; whole channels round to the nearest count, since a tensor keeps only a few (8 of
        32 in multiples of 8) and rounding up would swap one of them (an eighth of every output's inputs) at every
        update however far the death rate has decayed."""
        return math.ceil(rate * active) if self.structure == "kernel" else math.floor(rate * active + 0.5)

    def _units(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """Per pruning unit of tensor ``name``, from per-kernel ``values`` ``(a, b)``: the kernels themselves
        (flattened), or for ``"channel"`` structure one value per input channel (summed; a bool mask: any)."""
        if self.structure == "kernel":
            return values.flatten().clone()
        other = 1 - self._axes[name]
        return values.any(dim=other) if values.dtype == torch.bool else values.sum(dim=other)

    def state_dict(self) -> dict:
        return {
            "masks": self.masks.state_dict(),
            "iteration": self.iteration,
            "generator": self.generator.get_state(),
            "total_iterations": self.total_iterations,
            "structure": self.structure,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("structure", "kernel") != self.structure:
            raise ValueError(f"sparse state was trained with structure {state.get('structure', 'kernel')!r}, this "
                             f"run uses {self.structure!r}; pass the same sparse structure to resume.")
        if set(state["masks"]) != set(self.masks.masks):
            raise ValueError(
                f"sparse state masks {sorted(state['masks'])[:3]}... do not match this model's masked tensors "
                f"{sorted(self.masks.masks)[:3]}..."
            )
        self.masks.load_state_dict(state["masks"])
        self.iteration = int(state["iteration"])
        self.generator.set_state(state["generator"])
        # the length of the run being resumed wins (training may be extended); the saved one only fills a gap
        if self.total_iterations is None and state.get("total_iterations") is not None:
            self.total_iterations = int(state["total_iterations"])
        self.masks.apply(self.model)
