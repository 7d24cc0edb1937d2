"""Reject command-line overrides that name no config id (``monai.bundle run`` would silently add them)."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence

from monai.bundle import ConfigParser

from e2enet_monai.utils.errors import InputError, exit_on_input_error, running_bundle_cli

__all__ = ["check_cli_overrides"]

# arguments of `monai.bundle run` itself, which are not config ids
_RUN_ARGS = {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file",
             "workflow_type", "workflow_name", "properties_path"}


def _ids(config, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list):
        items = ((str(i), v) for i, v in enumerate(config))
    else:
        return out
    for key, value in items:
        name = f"{prefix}{key}"
        out.add(name)
        out |= _ids(value, name + "#")
    return out


@exit_on_input_error
def check_cli_overrides(argv: Sequence[str] | None = None) -> None:
    """
    When running as ``python -m monai.bundle run`` (or under torchrun), raise an
    :class:`~e2enet_monai.utils.errors.InputError` (the run's last line, see
    :func:`~e2enet_monai.utils.errors.exit_on_input_error`) for any ``--key value`` override whose key
    (``#``-separated path) is not an id of the merged config files, with close matches, and for a lowercase
    ``true``/``false`` given to a boolean id (the command line reads it as a truthy string).
    Does nothing when the bundle runs inside another program (MONAI Label, a Python API call).
    """
    argv = list(sys.argv if argv is None else argv)
    if not running_bundle_cli(argv):
        return
    args = argv[1:]
    keys, values = [], {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            key, _, inline = arg[2:].partition("=")
            keys.append(key)
            values[key] = inline or (args[i + 1] if i + 1 < len(args) else "")
    if "config_file" not in values:
        return
    parser = ConfigParser()
    parser.read_config(ConfigParser.load_config_files(_config_files(values["config_file"])))
    known = _ids(parser.get())
    unknown = [k for k in keys if k not in _RUN_ARGS and k.replace(".", "#") not in known and k != "bundle_root"]
    if unknown:
        hints = {k: difflib.get_close_matches(k, known, n=3) for k in unknown}
        detail = "; ".join(f"--{k}" + (f" (did you mean {', '.join('--' + m for m in v)}?)" if v else "")
                           for k, v in hints.items())
        raise InputError(f"unknown override(s) for this bundle's configs: {detail}. Overrides must name existing "
                         f"config ids; see the bundle's docs/README.md for the documented ones.")
    config = parser.get()
    # fire hands "true"/"false" over as strings, which are truthy: a silent `--sparse_training false` that trains sparse
    lowercase = [k for k in keys if k.replace(".", "#") in known and isinstance(_lookup(config, k), bool)
                 and values[k].strip() in ("true", "false")]
    if lowercase:
        detail = "; ".join(f"--{k} {values[k]} -> --{k} {values[k].strip().capitalize()}" for k in lowercase)
        raise InputError(f"boolean override(s) must be written True or False (monai.bundle reads lowercase as a "
                         f"string, which counts as true): {detail}.")


def _lookup(config, key: str):
    """Value of a ``#``- or ``.``-separated id in a raw config, or None."""
    node = config
    for part in key.replace(".", "#").split("#"):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _config_files(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        import ast

        return [str(v) for v in ast.literal_eval(value)]
    return [value]
