"""Argument helpers shared by the ``fire`` command-line tools."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["as_list"]


def as_list(value: str | Iterable[object] | object | None) -> list:
    """A list from a comma-separated string (``"a,b"``), the tuple fire makes of ``a,b``, one value, or ``None``."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return list(value) if isinstance(value, (list, tuple)) else [value]
