"""
Run as ``python tests/background_demos.py OUT NAME...`` by the test session (``conftest.py``): install this checkout
without ``-e`` into a fresh virtual environment (a wheel; the dependencies come from the test environment through
a ``.pth`` line, so nothing is downloaded), record where that environment finds the package and its bundles, then
run ``e2enet-demo`` for each NAME in turn from its own folder, while the other tests run.

Writes ``OUT/installed.json`` (or ``OUT/install.failed``), and per NAME ``OUT/NAME/run`` (the demo's workdir),
``OUT/NAME.log`` and, when it ends, ``OUT/NAME.rc`` (its exit code).
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
    """The fresh environment's ``bin`` folder, with this checkout installed from a wheel (not editable)."""
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


def main(out: str, *names: str) -> None:
    out_dir = Path(out)
    try:
        bin_dir = install(out_dir)
    except Exception as e:  # the demo fixture reports it
        (out_dir / "install.failed").write_text(f"{type(e).__name__}: {e}\n{getattr(e, 'stderr', '') or ''}")
        raise
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    for name in names:  # one after the other, each with the machine's threads, as a user runs them
        (out_dir / name).mkdir()
        cmd = [str(bin_dir / "e2enet-demo"), "--dataset", name, "--workdir", str(out_dir / name / "run"),
               "--topk", str(name == "btcv")]
        with open(out_dir / f"{name}.log", "w") as log:
            rc = subprocess.run(cmd, cwd=out_dir / name, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        (out_dir / f"{name}.rc").write_text(str(rc))


if __name__ == "__main__":
    main(*sys.argv[1:])
