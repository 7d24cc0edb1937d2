"""
A non-editable install of this checkout for the tests: a wheel installed into a fresh virtual environment whose
dependencies come from the test environment through a ``.pth`` line (nothing is downloaded), and ``e2enet-demo``
of that environment run from another folder. Used by the ``demo`` fixture of ``test_bundles_e2e.py``.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "demo_output", "eval",
                              "models")


def install(out: Path) -> Path:
    """
    Install this checkout from a wheel (not editable) into ``out/venv``; return its ``bin`` folder. Writes
    ``out/installed.json``: where that environment finds the package and its bundles, and its version.
    """
    src, wheels, venv = out / "src", out / "wheels", out / "venv"
    shutil.copytree(ROOT, src, ignore=SKIP)  # the build writes build/ and *.egg-info next to the sources
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin/python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(next(wheels.glob("*.whl")))], check=True)
    where = subprocess.run(
        [str(python), "-c", "import json, e2enet_monai; from e2enet_monai.bundle import bundles_dir; "
         "print(json.dumps({'package': e2enet_monai.__file__, 'bundles': str(bundles_dir()), "
         "'version': e2enet_monai.__version__}))"],
        check=True, capture_output=True, text=True, cwd=out).stdout
    (out / "installed.json").write_text(json.dumps({**json.loads(where), "bin": str(venv / "bin")}))
    return venv / "bin"


def run_demo(bin_dir: Path, name: str, folder: Path) -> Path:
    """``e2enet-demo --dataset NAME`` of the installed environment, started in ``folder`` (BTCV's with its top-k
    model); return its workdir. Raises with the log's tail when it fails."""
    folder.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(bin_dir / "e2enet-demo"), "--dataset", name, "--workdir", str(folder / "run"),
           "--topk", str(name == "btcv")]
    log = folder / "demo.log"
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=folder, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}):\n{log.read_text()[-4000:]}")
    return folder / "run"
