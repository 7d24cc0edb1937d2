"""Type tests for config and command-line values, where ``True`` and ``False`` must not pass as the numbers 1 and 0."""

from __future__ import annotations

from numbers import Integral, Real

__all__ = ["is_real", "is_whole"]


def is_real(value: object) -> bool:
    """A real number (int, float, NumPy scalar), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def is_whole(value: object) -> bool:
    """An integer (int, NumPy integer), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)
