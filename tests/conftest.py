"""
Shared fixtures: a real HTTP server on 127.0.0.1 for download tests (tests never use the internet), the MONAI
Label environment built in the background while the other tests run, and the three bundles' demos, run from a
non-editable install in the background too (``background_demos.py``); the tests that need a demo run last.
"""

import functools
import http.server
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

_BUILD_VENV = "from e2enet_monai.apps.monailabel.server import ensure_monailabel_venv; ensure_monailabel_venv()"


DEMO_NAMES = ("amos", "brats", "btcv")


def pytest_collection_modifyitems(session, config, items):
    """Tests that need a demo's trained bundle last (stable order otherwise): the demos train meanwhile."""
    items.sort(key=lambda item: "demo" in item.fixturenames)


def pytest_collection_finish(session):
    """
    Start building the MONAI Label environment (minutes of downloading and unpacking from PyPI, little CPU) as
    soon as a test that needs it is collected; its ``venv`` fixture calls the same locked, resumable build and waits.
    Likewise start the demos (about 15 minutes of CPU) when a test needs one; the ``demo`` fixture waits for them.
    """
    if any(item.path.name == "test_monailabel.py" and "venv" in item.fixturenames for item in session.items):
        session.config._monailabel_build = subprocess.Popen(
            [sys.executable, "-c", _BUILD_VENV], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
    if any("demo" in item.fixturenames for item in session.items):
        out = Path(tempfile.mkdtemp(prefix="e2enet_demos_"))
        session.config._demos = (out, subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("background_demos.py")), str(out), *DEMO_NAMES],
            stdout=open(out / "runner.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))


def pytest_sessionfinish(session):
    """Stop background work still running (e.g. after ``-x``): the MONAI Label build (the next session resumes
    it) and the demos."""
    build = getattr(session.config, "_monailabel_build", None)
    demos = getattr(session.config, "_demos", (None, None))[1]
    for proc in (build, demos):
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()


@pytest.fixture(scope="session")
def installed_demos(request):
    """``wait(name)``: the folder of ``background_demos.py``'s run once demo ``name`` has ended; raises with its
    log when it failed. The folder also holds ``installed.json`` (where the non-editable install found itself)."""
    started = getattr(request.config, "_demos", None)
    if started is None:
        pytest.fail("the demos start at collection when a collected test uses the demo fixture")
    out, proc = started

    def wait(name: str) -> Path:
        while not (out / f"{name}.rc").is_file():
            if proc.poll() is not None and not (out / f"{name}.rc").is_file():
                logs = [p for p in (out / "install.failed", out / f"{name}.log", out / "runner.log") if p.is_file()]
                pytest.fail(f"background demo {name} did not finish (runner exit {proc.returncode}):\n"
                            + "\n".join(f"{p}:\n{p.read_text()[-3000:]}" for p in logs))
            time.sleep(2)
        rc = int((out / f"{name}.rc").read_text())
        if rc != 0:
            pytest.fail(f"e2enet-demo --dataset {name} failed ({rc}):\n{(out / f'{name}.log').read_text()[-4000:]}")
        return out

    return wait


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files, plus ``/cut/<file>``: announces the full length but sends half, then closes."""

    def do_GET(self):  # noqa: N802 (http.server API)
        if self.path.startswith("/cut/"):
            data = (Path(self.directory) / self.path[len("/cut/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path / "site"`` on 127.0.0.1; yields (folder, base URL); stopped after the test."""
    site = tmp_path / "site"
    site.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def tiny_btcv_factory(tmp_path_factory):
    """``make(shape)``: 5 labelled BTCV-layout phantoms of ``shape`` voxels with their datalist, once per shape."""
    from e2enet_monai.data import prepare_dataset, write_synthetic

    made = {}

    def make(shape=(32, 32, 16)):
        if shape not in made:
            data = tmp_path_factory.mktemp("tiny_btcv")
            write_synthetic("btcv", data, num_train=5, num_test=0, shape=shape)
            prepare_dataset("btcv", data, data / "datalist.json")
            made[shape] = data
        return made[shape]

    return make
