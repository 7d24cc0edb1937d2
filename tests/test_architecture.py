"""
The package's layering (docs/architecture.md), enforced on the source: every import of ``e2enet_monai`` in the
package and in ``tools/`` goes down the layers or stays inside its own subpackage, with no cycle; stale facts that
drift (versions, exports) are checked against the code.
"""

import ast
import json
from pathlib import Path

import pytest

import e2enet_monai

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "e2enet_monai"
# lowest first; subpackages on one rank are peers and must not import each other
LAYERS = [
    {"utils"},
    {"networks"},
    {"inferers", "losses", "transforms", "data", "sparse"},
    {"handlers"},
    {"bundle"},
    {"release"},
    {"apps", "segment"},
    {"benchmarks"},
    {"tools"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    if path.is_relative_to(ROOT / "tools"):
        return f"tools.{path.stem}"
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    files = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "tools").glob("*.py"))
    return {module_name(p): p for p in files}


def imports(path: Path, known: set[str]) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of the package in ``path``, lazy ones inside functions included; a name
    imported from a package resolves to its submodule when it is one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; the package uses absolute imports"
            if node.module and node.module.split(".")[0] == "e2enet_monai":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.append((node.lineno, sub if sub in known else node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "e2enet_monai"]
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return "tools" if parts[0] == "tools" else parts[1] if len(parts) > 1 else None


def graph() -> dict[str, list[tuple[int, str]]]:
    src = sources()
    return {name: imports(path, set(src)) for name, path in src.items()}


def test_every_subpackage_has_a_layer():
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == RANK.keys() - {"tools"}
    assert set(e2enet_monai.SUBPACKAGES) == subpackages


def test_imports_only_go_down_the_layers():
    bad = []
    for name, found in graph().items():
        mine = layer(name)
        for line, target in found:
            theirs = layer(target)
            if mine is None:  # the root package imports nothing of its own statically (its subpackages are lazy)
                bad.append(f"{name}:{line} imports {target}")
            elif theirs is None:  # the root package, below every layer: it holds __version__ and imports nothing
                continue
            elif theirs != mine and RANK[theirs] >= RANK[mine]:
                bad.append(f"{name}:{line} ({mine}, layer {RANK[mine]}) imports {target} ({theirs}, layer "
                           f"{RANK[theirs]})")
    assert not bad, "imports against the layering of docs/architecture.md:\n" + "\n".join(bad)


def test_no_import_cycles():
    edges = {name: sorted({t for _, t in found if t in sources()}) for name, found in graph().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_layering_test_catches_a_violation(tmp_path, monkeypatch):
    """The checks above are not vacuous: a network importing the bundle layer is reported."""
    bad = tmp_path / "e2enet_monai/networks/bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from e2enet_monai.bundle.checks import check_checkpoint\n")
    found = imports(bad, set(sources()))
    assert found == [(1, "e2enet_monai.bundle.checks")]
    assert RANK[layer(found[0][1])] > RANK[layer("e2enet_monai.networks.bad")]


def test_no_private_monai_imports():
    private = [f"{name}:{node.lineno}" for name, path in sources().items()
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("monai")
               and any(a.name.startswith("_") for a in node.names)]
    assert not private, private


@pytest.mark.parametrize("bundle", sorted(p.name for p in (ROOT / "bundles").iterdir() if p.is_dir()))
def test_bundle_metadata_requires_this_package_version(bundle):
    meta = json.loads((ROOT / "bundles" / bundle / "configs/metadata.json").read_text())
    for key in ("required_packages_version", "optional_packages_version"):
        assert meta[key]["e2enet-monai"] == e2enet_monai.__version__, (key, meta[key])
    assert meta["version"] in meta["changelog"] and next(iter(meta["changelog"])) == meta["version"]


def test_exports_name_what_the_modules_define():
    """Every subpackage's ``__all__`` names only what it has, and each of its names once."""
    import importlib

    for sub in e2enet_monai.SUBPACKAGES:
        module = importlib.import_module(f"e2enet_monai.{sub}")
        exports = getattr(module, "__all__", [])
        assert len(exports) == len(set(exports)), (sub, exports)
        missing = [e for e in exports if not hasattr(module, e)]
        assert not missing, f"e2enet_monai.{sub}.__all__ names {missing}, which it lacks"
