"""The settings of dynamic sparse training and what values each accepts, checked without a model."""

from __future__ import annotations

from e2enet_monai.utils.values import is_real, is_whole

__all__ = ["DENSITY_MODES", "GROWTH_MODES", "STRUCTURES", "check_sparse_settings", "sparse_setting_problems"]

DENSITY_MODES = ("uniform", "erk")
GROWTH_MODES = ("random", "gradient")
# "kernel": any (output, input) kernel may be pruned alone (the paper's masks); "channel": whole input channels of a
# weight are pruned or kept together, so a trained mesh can be compacted into smaller dense convolutions
STRUCTURES = ("kernel", "channel")


def sparse_setting_problems(
    density: float = 0.2,
    distribution: str = "uniform",
    growth: str = "random",
    death_rate: float = 0.5,
    final_death_rate: float = 0.001,
    update_frequency: int = 1200,
    structure: str = "kernel",
    channel_multiple: int = 1,
    total_iterations: int | None = None,
) -> dict[str, str]:
    """
    What is wrong with settings of :class:`~e2enet_monai.sparse.DynamicSparsity` (the defaults are valid), found
    without a model: argument name -> what was expected and what was found, e.g. ``{"death_rate": "must be a number
    in [0.001 (the final death rate), 1), got 1.5"}``; empty when every setting is valid. The bundles' start-up check
    names each problem by its config id; the library raises them through :func:`check_sparse_settings`.
    """
    problems = {}
    if not (is_real(density) and 0.0 < density <= 1.0):
        problems["density"] = f"must be a number in (0, 1], got {density!r}"
    if distribution not in DENSITY_MODES:
        problems["distribution"] = f"must be one of {DENSITY_MODES}, got {distribution!r}"
    if growth not in GROWTH_MODES:
        problems["growth"] = f"must be one of {GROWTH_MODES}, got {growth!r}"
    final_ok = is_real(final_death_rate) and 0.0 <= final_death_rate < 1.0
    if not final_ok:
        problems["final_death_rate"] = f"must be a number in [0, 1), got {final_death_rate!r}"
    if not (is_real(death_rate) and (final_death_rate if final_ok else 0.0) <= death_rate < 1.0):
        lower = f"{final_death_rate} (the final death rate)" if final_ok else "0"
        problems["death_rate"] = f"must be a number in [{lower}, 1), got {death_rate!r}"
    if not (is_whole(update_frequency) and update_frequency >= 1):
        problems["update_frequency"] = f"must be a whole number of iterations >= 1, got {update_frequency!r}"
    if structure not in STRUCTURES:
        problems["structure"] = f"must be one of {STRUCTURES}, got {structure!r}"
    if not (is_whole(channel_multiple) and channel_multiple >= 1):
        problems["channel_multiple"] = f"must be a whole number >= 1, got {channel_multiple!r}"
    elif channel_multiple > 1 and structure != "channel":
        problems["channel_multiple"] = (f"must be 1 with kernel masks (a multiple of input channels needs structure "
                                        f"'channel'), got {channel_multiple} with structure {structure!r}")
    if total_iterations is not None and not (is_whole(total_iterations) and total_iterations >= 1):
        problems["total_iterations"] = f"must be a whole number >= 1, got {total_iterations!r}"
    return problems


def check_sparse_settings(**settings) -> None:
    """Raise one ValueError naming every problem :func:`sparse_setting_problems` finds in ``settings``."""
    problems = sparse_setting_problems(**settings)
    if problems:
        raise ValueError(f"sparse training settings: {'; '.join(f'{k} {v}' for k, v in problems.items())}.")
