"""
Shared fixtures: a real HTTP server on 127.0.0.1 for download tests (tests never use the internet); the MONAI
Label environment, and the non-editable install with every bundle's demo training, both started in the background
while the other tests run. The tests that need a demo run last, when it has had the most time.
"""

import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from e2enet_monai.apps.monailabel.server import monailabel_venv_built
from e2enet_monai.apps.runner import read_dice_table
from e2enet_monai.bundle.registry import SHIPPED_BUNDLES

_BUILD_VENV = "from e2enet_monai.apps.monailabel.server import ensure_monailabel_venv; ensure_monailabel_venv()"
# whether the MONAI Label environment is there before the session starts building it
_MONAILABEL_BUILT = monailabel_venv_built()


# the order the demos start in: BTCV's first, as most tests wait for it, so they run while the other demos still
# train in the background; AMOS's (four times BraTS's training) beside it, BraTS's when the first of them is done
# (BTCV's, at a higher priority; see installed.BackgroundDemos)
DEMO_ORDER = ("btcv", "amos", "brats")
# the order in which the tests waiting for them run: the order they end in
WAIT_ORDER = ("btcv", "amos", "brats")


def _demo_of(item: pytest.Item) -> str | None:
    """The demo a test waits for (``None``: none): its ``name`` parameter, else BTCV's."""
    if "demo" not in item.fixturenames and "installed" not in item.fixturenames:
        return None
    return item.callspec.params.get("name", "btcv") if hasattr(item, "callspec") else "btcv"


def _group(item: pytest.Item) -> int:
    """
    When a test runs: first those that wait for nothing, then BTCV's demo, then the MONAI Label environment (a
    download of several GB started at collection, so it has had the most time without holding up the tests that
    need only BTCV's demo), then the other demos in :data:`WAIT_ORDER`. Where the MONAI Label environment was
    built by an earlier session, the tests that need only it wait for nothing: they run with the first group, while
    BTCV's demo trains, rather than after it.
    """
    demo = _demo_of(item)
    if "venv" in item.fixturenames and item.path.name == "test_monailabel.py":
        return 0 if demo is None and _MONAILABEL_BUILT else 2
    return 0 if demo is None else 1 if demo == "btcv" else 2 + WAIT_ORDER.index(demo)


def pytest_collection_modifyitems(session, config, items):
    """The tests that wait for background work last, in the groups of :func:`_group` (each in its file order):
    the others run meanwhile."""
    items.sort(key=_group)


def pytest_collection_finish(session):
    """
    Start, as soon as the tests that need them are collected: the MONAI Label environment's build unless it is
    cached (minutes of downloading and unpacking 8 GB from PyPI, about 140 CPU seconds, at the demos' priority; the
    ``venv`` fixture calls the same locked, resumable build and waits), and the demos the collected tests use
    (:class:`installed.BackgroundDemos`; BTCV's for the tests that are not parametrized by bundle name).
    """
    if any(item.path.name == "test_monailabel.py" and "venv" in item.fixturenames for item in session.items):
        # a process group of its own (to stop it whole), not a session: Linux's autogroup scheduling would give a
        # session of its own as much CPU as the whole test session, so that where the environment is not cached yet
        # its unpacking slowed every test and starved the demos; at nice 19 (inherited by pip's own processes) it
        # takes its turn with the demos
        build = subprocess.Popen([sys.executable, "-c", _BUILD_VENV], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, process_group=0)
        os.setpriority(os.PRIO_PROCESS, build.pid, 19)
        session.config._monailabel_build = build
    names = {_demo_of(item) for item in session.items} - {None}
    if names:
        from installed import BackgroundDemos

        root = session.config._tmp_path_factory.mktemp("demos")
        session.config._demos = BackgroundDemos(root, [name for name in DEMO_ORDER if name in names])


def pytest_sessionfinish(session):
    """Stop background work still running (e.g. after ``-x``): the MONAI Label build, pip included (the next
    session resumes it), and the demos."""
    build = getattr(session.config, "_monailabel_build", None)
    if build is not None and build.poll() is None:
        os.killpg(build.pid, signal.SIGTERM)
        build.wait()
    demos = getattr(session.config, "_demos", None)
    if demos is not None:
        demos.stop()


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


@pytest.fixture(scope="session")
def installed(request):
    """This checkout installed without ``-e`` into a fresh environment (``installed.py``, started at collection
    by :func:`pytest_collection_finish`): (folder, its bin/)."""
    return request.config._demos.installed()


@pytest.fixture(scope="session")
def demo(request):
    """Each bundle's demo (BTCV's with its top-k model), run once per session by ``e2enet-demo`` of the
    non-editable install, started in another folder, in the background from collection on
    (:func:`pytest_collection_finish`): (workdir, bundle folder, Dice on the held-out phantoms)."""
    cache = {}

    def get(name):
        if name not in cache:
            work = request.config._demos.result(name)
            bundle = work / SHIPPED_BUNDLES[name].folder
            meta = json.loads((bundle / "configs/metadata.json").read_text())["network_data_format"]
            cache[name] = (work, bundle, read_dice_table(bundle / "eval", meta["outputs"]["pred"]["channel_def"]))
        return cache[name]

    return get
