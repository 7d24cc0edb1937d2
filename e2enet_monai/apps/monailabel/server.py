"""Set up and start a MONAI Label server (``monaibundle`` app) serving this project's bundles, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from e2enet_monai.apps.config_values import set_config_values
from e2enet_monai.bundle.checks import check_weights_fit_configs

__all__ = ["FAST_SUFFIX", "MONAILABEL_REQUIREMENTS", "default_venv", "ensure_monailabel_venv", "monailabel_venv_built",
           "server_command", "setup_app"]

# MONAI Label 0.8.5 does not import beside the CPU torch 2.13 (its torchvision fails); this set works together
MONAILABEL_REQUIREMENTS = (
    ["torch==2.14.1", "torchvision==0.29.1", "monai==1.6.1", "monailabel==0.8.5"],
    ["pydicom>=2.4.4,<3", "dicomweb-client==0.59.3"],
)
# set in the served copies' train.json: MONAI Label's training updates the model it serves
SERVED_TRAIN_VALUES = {"overwrite": True}
APP_PATCH = Path(__file__).with_name("app_files") / "e2enet_infer.py"
# the app's own copy of this package (source files only), on the server's PYTHONPATH: the bundles' configs import
# it, and MONAI Label's environment must not see the project environment's site-packages (another torch)
APP_PYTHON = "e2enet_python"
STOCK_IMPORT = "from monailabel.tasks.infer.bundle import BundleInferTask"
STOCK_CLASS = "class MyApp(MONAILabelApp):"
APP_CHECKS = Path(__file__).with_name("app_files") / "e2enet_app.py"
# a bundle with trained top-k weights is also served as "<name>_fast": top-k inference, infer only
FAST_SUFFIX = "_fast"


def default_venv() -> Path:
    """``$E2ENET_MONAILABEL_VENV`` or ``~/.cache/e2enet-monai/monailabel-venv`` (outside any clone, reused)."""
    env = os.environ.get("E2ENET_MONAILABEL_VENV")
    return Path(env) if env else Path.home() / ".cache/e2enet-monai/monailabel-venv"


def _build_marker(venv: Path) -> Path:
    """The file a completed build writes into ``venv``: the requirements it installed."""
    return venv / ".e2enet-requirements.json"


def monailabel_venv_built(venv: str | os.PathLike | None = None) -> bool:
    """Whether a build of the MONAI Label environment (default :func:`default_venv`) completed with the current
    :data:`MONAILABEL_REQUIREMENTS` (its completion marker; a build in progress or interrupted has none)."""
    marker = _build_marker(Path(venv) if venv else default_venv())
    return marker.is_file() and marker.read_text() == json.dumps(MONAILABEL_REQUIREMENTS)


def ensure_monailabel_venv(venv: str | os.PathLike | None = None, python: str = sys.executable) -> Path:
    """
    Return a virtual environment with MONAI Label 0.8.5, creating it (about 2 minutes and 8 GB from PyPI) unless a
    previous build completed with the same :data:`MONAILABEL_REQUIREMENTS`. It is separate from the project's
    environment on purpose (see :data:`MONAILABEL_REQUIREMENTS`). Concurrent callers (e.g. a build started in the
    background by the test session and the test that needs it) wait on a lock file next to the environment, so one
    builds and the others reuse it; an interrupted build has no completion marker and is resumed by the next call.
    """
    import fcntl  # POSIX only, like the rest of the MONAI Label set-up

    venv = Path(venv) if venv else default_venv()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if monailabel_venv_built(venv):
            return venv
        if not (venv / "bin/python").is_file():
            subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q"]
        for requirements in MONAILABEL_REQUIREMENTS:
            subprocess.run(pip + list(requirements), check=True)
        _build_marker(venv).write_text(json.dumps(MONAILABEL_REQUIREMENTS))
    return venv


def setup_app(app_dir: str | os.PathLike, bundles: Sequence[str | os.PathLike], venv: str | os.PathLike | None = None,
              values: Mapping[str, object] | None = None, overwrite: bool = False) -> Path:
    """
    Build ``app_dir`` from MONAI Label's stock ``monaibundle`` sample app (shipped inside the MONAI Label
    environment), with each bundle copied to ``<app_dir>/model/<name>`` and our one-class extension that takes the
    label names of a post-processed label map (the BraTS bundle) from the bundle's metadata.

    A bundle that also holds trained top-k weights (``models/model_topk.pt``, e.g. the demo's) is served a second
    time as ``<name>_fast`` (:data:`FAST_SUFFIX`): its ``inference.json`` is the bundle's with
    ``inference_topk.json`` on top and its ``models/model.pt`` the top-k weights, so a 3D Slicer user can pick
    top-k inference; it has no ``train.json`` (MONAI Label trains the sliding-window model; the fast one keeps its
    weights).

    Args:
        app_dir: app folder to create.
        bundles: bundle folders; each needs ``models/model.pt`` (MONAI Label ignores bundles without weights).
        venv: MONAI Label environment (default :func:`default_venv`).
        values: config ids to set in the copies' ``inference.json`` and ``train.json`` where they exist (MONAI Label
            cannot pass overrides), e.g. ``{"epoch_length": 20}`` or a CPU-sized network.
        overwrite: replace an existing ``app_dir``.

    Raises:
        InputError: a bundle's weights do not fit the network its configs (with ``values``) build; nothing is left.
    """
    app = Path(app_dir)
    stock = Path(venv if venv else default_venv()) / "monailabel/sample-apps/monaibundle"
    if not (stock / "main.py").is_file():
        raise FileNotFoundError(f"MONAI Label's monaibundle app not found at {stock}: create the environment with "
                                f"`python tools/monailabel_app.py install` first.")
    if app.exists():
        if not overwrite:
            raise FileExistsError(f"{app} exists; pass overwrite=True (--overwrite True) to rebuild it.")
        shutil.rmtree(app)
    missing = [str(b) for b in bundles if not (Path(b) / "models/model.pt").is_file()]
    if missing:
        raise FileNotFoundError(f"no models/model.pt in {missing}: MONAI Label would silently ignore these bundles; "
                                f"train them (python tools/demo.py) or download released weights first.")
    shutil.copytree(stock, app, ignore=shutil.ignore_patterns("__pycache__"))
    main = app / "main.py"
    text = main.read_text()
    if STOCK_IMPORT not in text:
        raise RuntimeError(f"{main} no longer imports BundleInferTask as expected ({STOCK_IMPORT!r}); this MONAI "
                           f"Label version is not supported (tested: 0.8.5).")
    if STOCK_CLASS not in text:
        raise RuntimeError(f"{main} no longer defines {STOCK_CLASS!r}; this MONAI Label version is not supported "
                           f"(tested: 0.8.5).")
    text = text.replace(STOCK_IMPORT, "from lib.infers.e2enet_infer import BundleInferTask\n"
                                      "from lib.e2enet_app import E2ENetRequestChecks")
    main.write_text(text.replace(STOCK_CLASS, "class MyApp(E2ENetRequestChecks, MONAILabelApp):"))
    shutil.copy2(APP_PATCH, app / "lib/infers/e2enet_infer.py")
    shutil.copy2(APP_CHECKS, app / "lib/e2enet_app.py")
    shutil.copytree(Path(__file__).resolve().parents[2], app / APP_PYTHON / "e2enet_monai",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for bundle in bundles:
        dest = app / "model" / Path(bundle).name
        shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("eval", "__pycache__"))
        # POST /train is the annotator's request to replace the served model.pt, which training otherwise refuses
        set_config_values(dest, SERVED_TRAIN_VALUES, ["train.json"])
        set_config_values(dest, values or {}, ["inference.json", "train.json"])
        served = [dest]
        if (Path(bundle) / "models/model_topk.pt").is_file():
            served.append(_fast_copy(dest, app / "model" / f"{dest.name}{FAST_SUFFIX}", Path(bundle)))
        for folder in served:
            try:  # MONAI Label would answer every /infer with HTTP 500 (a size mismatch in its log only)
                check_weights_fit_configs(folder)
            except Exception:
                shutil.rmtree(app)
                raise
    return app


def _fast_copy(served: Path, fast: Path, bundle: Path) -> Path:
    """The served copy ``served`` as a top-k model at ``fast``: merged inference config, top-k weights, no training
    configs."""
    shutil.copytree(served, fast, ignore=shutil.ignore_patterns("models", "train*.json", "multi_gpu_*.json",
                                                                  "evaluate.json", "inference_topk.json"))
    configs = served / "configs"
    merged = {**json.loads((configs / "inference.json").read_text()),
              **json.loads((configs / "inference_topk.json").read_text())}
    (fast / "configs/inference.json").write_text(json.dumps(merged, indent=4) + "\n")
    (fast / "models").mkdir()
    shutil.copy2(bundle / "models/model_topk.pt", fast / "models/model.pt")
    return fast


def server_command(app_dir: str | os.PathLike, studies: str | os.PathLike, models: Sequence[str], port: int = 8000,
                   venv: str | os.PathLike | None = None, host: str = "127.0.0.1") -> tuple[list[str], dict]:
    """
    Command line and environment that start the server offline: ``zoo_source github`` (use the local bundle
    folders, no model-zoo listing), ``sam2 false``, and the app's copy of this package (:func:`setup_app`) on
    ``PYTHONPATH`` so the bundles' configs can ``import e2enet_monai``.
    """
    venv = Path(venv) if venv else default_venv()
    cmd = [str(venv / "bin/monailabel"), "start_server", "--app", str(app_dir), "--studies", str(studies),
           "--host", host, "--port", str(port), "--conf", "models", ",".join(models),
           "--conf", "zoo_source", "github", "--conf", "sam2", "false"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(app_dir).resolve() / APP_PYTHON),
                                                   os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    return cmd, env
