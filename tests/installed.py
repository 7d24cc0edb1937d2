"""
A non-editable install of this checkout for the tests: a wheel installed into a fresh virtual environment whose
dependencies come from the test environment through a ``.pth`` line (nothing is downloaded), and ``e2enet-demo``
of that environment run from another folder. :class:`BackgroundDemos` starts the install and every bundle's demo as
soon as the tests are collected (``conftest.py``), so the demos train while the other tests run; the ``installed``
and ``demo`` fixtures of ``test_bundles_e2e.py`` wait for them.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# nice levels of the demos: the first to start (BTCV's) and every later one (their shares when they compete for a
# core: 36 to 15); see :class:`BackgroundDemos`
FIRST_DEMO_NICE, LATER_DEMO_NICE = 15, 19
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


def demo_command(bin_dir: Path, name: str, folder: Path) -> list[str]:
    """``e2enet-demo --dataset NAME`` of the installed environment into ``folder/run`` (BTCV's with its top-k model)."""
    return [str(bin_dir / "e2enet-demo"), "--dataset", name, "--workdir", str(folder / "run"),
            "--topk", str(name == "btcv")]


class BackgroundDemos:
    """
    The non-editable install, then the named bundles' demos, in that order, on one worker thread per core.

    Each demo runs with one PyTorch thread below the tests' priority, so that the tests running meanwhile keep the
    cores they ask for and the demos use what the tests leave idle (a test waiting for a subprocess or a server, or
    running on one core), at the nice levels :data:`FIRST_DEMO_NICE` (the first) and :data:`LATER_DEMO_NICE`.
    BTCV's, which most tests wait for, gets most of that time and ends close to when the tests that wait for nothing
    do; AMOS's gets enough of it to end while the tests that run after them do (they leave a core idle about half
    the time), not alone after them; BraTS's short one, started when BTCV's ends, shares with AMOS's. Measured in
    rehearsals: with AMOS's at idle priority it trained alone for the last two minutes (112 of 116 idle CPU
    seconds); with all at nice 19 all three ended five minutes before the tests, which then left 249 CPU seconds
    idle; with BTCV's at nice 16 AMOS's and BraTS's ended 4 and 2.5 minutes before the tests (99 idle), at nice 15
    three minutes and 50 s before them (40 idle). BraTS's ran at idle priority until the MONAI Label tests that need
    no demo moved before BTCV's demo ends: it then ended last, after AMOS's tests, which waited 25 s for it with a
    core idle. One thread each, because a demo with two threads on a core that a test leaves free half the time
    makes almost no progress (each step waits for its starved second thread), and two one-thread demos side by side
    train more per second than one two-thread demo.
    A demo's result is the README's command, run from another folder as a user would run it; with one thread it
    trains as a two-thread run does, up to float rounding (so its Dice is close to, not equal to, the README's).
    """

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root, self.names = root, list(names)
        self._done = {name: threading.Event() for name in self.names}
        self._installed = threading.Event()
        self._returncodes: dict[str, int] = {}
        self._logs = {name: root / f"demo_{name}" / "cwd" / "demo.log" for name in self.names}
        self._bin: Path | None = None
        self._error: BaseException | None = None
        self._queue = list(self.names)
        self._lock = threading.Lock()
        self._running: list[subprocess.Popen] = []
        self._stopped = False
        self._finished = 0
        workers = max(1, min(len(self.names), os.cpu_count() or 1))
        self._threads = [threading.Thread(target=self._run, args=(i == 0,), daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def _run(self, installs: bool) -> None:
        try:
            if installs:
                try:
                    self._bin = install(self.root / "installed")
                except BaseException as e:  # re-raised in the tests that wait for it
                    self._error = e
                finally:
                    self._installed.set()
            self._installed.wait()
            if self._error is None:
                self._demos()
        finally:
            self._finish()

    def _demos(self) -> None:
        """Run the next demo in the queue until it is empty or :meth:`stop` was called."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PATH=f"{self._bin}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1")
        while True:
            with self._lock:
                if self._stopped or not self._queue:
                    return
                name = self._queue.pop(0)
                folder = self._logs[name].parent
                folder.mkdir(parents=True)
                with open(self._logs[name], "w") as log:
                    # a process group of its own (to stop it whole) but not a session: Linux's autogroup
                    # scheduling shares the CPU equally between sessions, whatever their priority
                    proc = subprocess.Popen(demo_command(self._bin, name, folder), cwd=folder, stdout=log,
                                            stderr=subprocess.STDOUT, env=env, process_group=0)
                # below the tests, inherited by the bundle runs it starts (see the class docstring)
                os.sched_setscheduler(proc.pid, os.SCHED_BATCH, os.sched_param(0))
                nice = FIRST_DEMO_NICE if self.names.index(name) == 0 else LATER_DEMO_NICE
                os.setpriority(os.PRIO_PROCESS, proc.pid, nice)
                self._running.append(proc)
            self._returncodes[name] = proc.wait()
            self._done[name].set()

    def _finish(self) -> None:
        """A worker is out of work (stopped, failed or done): once all are, nobody waits for a demo not run."""
        with self._lock:
            self._finished += 1
            if self._finished == len(self._threads):
                for event in self._done.values():
                    event.set()

    def installed(self) -> tuple[Path, Path]:
        """Wait for the install: (its folder, its ``bin/``)."""
        self._installed.wait()
        if self._error is not None:
            raise RuntimeError("the non-editable install failed") from self._error
        return self.root / "installed", self._bin

    def result(self, name: str) -> Path:
        """Wait for ``name``'s demo; return its workdir. Raises with the log's tail when it failed."""
        self.installed()
        self._done[name].wait()
        rc = self._returncodes.get(name)
        if rc != 0:
            tail = self._logs[name].read_text()[-4000:] if self._logs[name].is_file() else "(not started)"
            raise RuntimeError(f"{' '.join(demo_command(self._bin, name, self._logs[name].parent))} failed "
                               f"({rc}):\n{tail}")
        return self._logs[name].parent / "run"

    def stop(self) -> None:
        """Stop the demos still running (after ``-x``, or a failure): each one's process group; start no other."""
        with self._lock:
            self._stopped = True
            running = [proc for proc in self._running if proc.poll() is None]
        for proc in running:
            os.killpg(proc.pid, signal.SIGTERM)
        for thread in self._threads:
            thread.join()
