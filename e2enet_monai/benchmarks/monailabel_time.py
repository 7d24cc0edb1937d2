"""
How long a MONAI Label ``/infer`` takes for one full-size CT, sliding window against the top-k (``_fast``) model
that ``setup`` adds, measured on a real server with the requests 3D Slicer sends (an upload, then ``/infer`` by image
id with NRRD output), rounds interleaved, medians reported; and how long ``/info/`` waits while an inference runs.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

from e2enet_monai.apps.monailabel.server import FAST_SUFFIX, ensure_monailabel_venv, server_command, setup_app
from e2enet_monai.benchmarks.segment_time import full_ct

__all__ = ["SLICER_PARAMS", "benchmark_monailabel", "multipart"]

# what 3D Slicer's MONAI Label module asks /infer for
SLICER_PARAMS = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False}


def multipart(url: str, method: str = "POST", fields: dict[str, str] | None = None,
              files: dict[str, tuple[str, bytes]] | None = None, timeout: float = 3600) -> tuple[str, bytes]:
    """A multipart form request as MONAI Label's client sends it (text ``fields``, ``files`` {name: (filename,
    bytes)}); returns the reply's content type and body."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in (fields or {"params": "{}"}).items():
        body += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
    for name, (filename, data) in (files or {}).items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.headers.get("Content-Type", ""), response.read()


def _get(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _wait_for(url: str, server: subprocess.Popen, log: Path, seconds: float = 600) -> dict:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the MONAI Label server exited:\n{log.read_text()[-4000:]}")
        try:
            return json.loads(_get(f"{url}/info/", timeout=5))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(2)
    raise RuntimeError(f"the MONAI Label server did not answer in {seconds:.0f} s:\n{log.read_text()[-4000:]}")


def _info_waits_during(infer: threading.Thread, url: str, every: float = 2.0) -> list[float]:
    """Seconds each ``/info/`` request waited, one every ``every`` seconds while ``infer`` runs."""
    waits = []
    while infer.is_alive():
        start = time.perf_counter()
        _get(f"{url}/info/")
        waits.append(time.perf_counter() - start)
        infer.join(timeout=every)
    return waits


def benchmark_monailabel(bundle: str | Path, workdir: str | Path, shape: Sequence[int] = (512, 512, 200),
                         spacing: Sequence[float] = (0.8, 0.8, 2.5), repeats: int = 1, port: int = 8765,
                         venv: str | Path | None = None) -> list[dict]:
    """
    Serve ``bundle`` (a bundle folder with ``models/model.pt`` and, for the fast model, ``models/model_topk.pt``,
    e.g. the demo's) from a MONAI Label app built in ``workdir`` by :func:`setup_app`, upload one BTCV-layout phantom
    CT of ``shape`` voxels at ``spacing`` mm, and time ``/infer`` of each served model ``repeats`` times, rounds
    interleaved. During every inference, ``/info/`` is requested every 2 s and its wait recorded.

    Returns:
        one row per model: ``model``, ``seconds`` (median), ``runs``, ``info_wait_max`` (seconds) and
        ``info_requests`` (how many were sent during its inferences).
    """
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    venv = ensure_monailabel_venv(venv)
    app = setup_app(work / "app", [bundle], venv, overwrite=True)
    models = sorted(p.name for p in (app / "model").iterdir() if p.is_dir())
    studies = work / "studies"
    studies.mkdir(exist_ok=True)
    image = full_ct(work / "phantom", shape, spacing)
    cmd, env = server_command(app, studies, models, port, venv)
    log = work / "server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for(url, server, log)
            multipart(f"{url}/datastore/?image=ct_full", "PUT", files={"file": ("ct_full.nii.gz", image.read_bytes())})
            fields = {"params": json.dumps(SLICER_PARAMS)}
            runs: dict[str, list[float]] = {m: [] for m in models}
            waits: dict[str, list[float]] = {m: [] for m in models}
            for _ in range(repeats):
                for model in models:
                    errors: list[BaseException] = []

                    def infer(model: str = model) -> None:
                        try:
                            start = time.perf_counter()
                            multipart(f"{url}/infer/{model}?image=ct_full", fields=fields)
                            runs[model].append(time.perf_counter() - start)
                        except BaseException as error:  # re-raised below, in the caller's thread
                            errors.append(error)

                    thread = threading.Thread(target=infer)
                    thread.start()
                    thread.join(timeout=1.0)
                    waits[model] += _info_waits_during(thread, url)
                    if errors:
                        raise errors[0]
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    return [{"model": m, "fast": m.endswith(FAST_SUFFIX), "seconds": statistics.median(runs[m]), "runs": runs[m],
             "info_wait_max": max(waits[m], default=0.0), "info_requests": len(waits[m])} for m in models]
