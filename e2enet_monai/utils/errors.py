"""Errors a user can act on, and how they end a ``python -m monai.bundle run``."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["InputError", "cli_entry", "exit_on_input_error", "running_bundle_cli"]

F = TypeVar("F", bound=Callable)


class InputError(ValueError):
    """
    A problem with what the user gave (a file, a datalist, an override, a bundle folder) that they can fix. The
    message names the file or config id, what was expected and what was found.
    """


def running_bundle_cli(argv: Sequence[str] | None = None) -> bool:
    """True when this process is ``python -m monai.bundle ...`` (also each rank under ``torchrun -m``)."""
    argv = list(sys.argv if argv is None else argv)
    return bool(argv) and argv[0].replace("\\", "/").endswith("monai/bundle/__main__.py")


def _ending_with_message(func: F, when: Callable[[], bool]) -> F:
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as e:
            if when():
                raise SystemExit(f"error: {e}") from None
            raise

    return wrapper  # type: ignore[return-value]


def exit_on_input_error(func: F) -> F:
    """
    Let ``func`` end a ``monai.bundle run`` command with its :class:`InputError` message as the last line printed
    and exit code 1, instead of MONAI's ``Failed to evaluate ConfigExpression`` after a long traceback (MONAI wraps
    every ``Exception`` raised in a config expression, but not ``SystemExit``). Inside another program (MONAI Label,
    a Python call, a test) the :class:`InputError` is raised as it is.
    """
    return _ending_with_message(func, running_bundle_cli)


def cli_entry(func: F) -> F:
    """For the ``main`` of a command-line tool: an :class:`InputError` ends it with ``error: <message>`` as the
    last line and exit code 1, without a traceback."""
    return _ending_with_message(func, lambda: True)
