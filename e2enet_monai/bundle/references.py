"""Config plumbing: refer to an object defined under another id where a config needs a ``_target_`` dict."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["existing"]

T = TypeVar("T")


def existing(obj: T) -> T:
    """Return ``obj``: lets a config list an object defined elsewhere (``{"_target_": "...existing", "obj": "@id"}``)
    while every list item stays a ``_target_`` dict, which MONAI's property checks and MONAI Label expect."""
    return obj
