"""A real MONAI Label server (monaibundle app, its own environment) serving and training the three bundles."""

import email.parser
import email.policy
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from e2enet_monai.apps.monailabel.server import ensure_monailabel_venv, server_command, setup_app
from e2enet_monai.benchmarks.monailabel_time import SLICER_PARAMS
from e2enet_monai.benchmarks.monailabel_time import multipart as _multipart
from e2enet_monai.bundle.registry import bundles_dir
from e2enet_monai.data import write_synthetic
from e2enet_monai.data.phantoms import brats_phantom

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CT = ["e2enet_btcv_segmentation", "e2enet_amos_ct_segmentation"]
BRATS = ["e2enet_brats_segmentation"]
# baked into the served copies: a CPU-sized network and 2-iteration epochs
VALUES = {"channels": [8, 16, 32, 64], "strides": [1, 2, 2, 2], "patch_size": [32, 48, 48], "epoch_length": 2,
          "num_samples": 1, "num_workers": 0, "cache_rate": 0.0, "optimizer_name": "adamw", "learning_rate": 0.01,
          "sparse_update_frequency": 1}
# what annotators draw in MONAI Label is the served label map (enhancing tumour 3), so BraTS trains on that convention
BRATS_VALUES = {"label_convention": "brats2023"}


@pytest.fixture(scope="module")
def venv():
    return ensure_monailabel_venv()  # waits for the build conftest started in the background, or builds it


def _bundles_with_weights(root: Path, names: list[str]) -> list[Path]:
    out = []
    for name in names:
        bundle = root / name
        shutil.copytree(bundles_dir() / name, bundle, ignore=shutil.ignore_patterns("models", "eval"))
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs/inference.json"))
        parser.update({k: v for k, v in VALUES.items() if k in parser.get()})
        torch.manual_seed(0)
        (bundle / "models").mkdir()
        torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, bundle / "models/model.pt")
        out.append(bundle)
    return out


def _studies(root: Path, kind: str) -> Path:
    """MONAI Label datastore: images in the folder, final labels in labels/final with the same names."""
    studies = root / "studies"
    (studies / "labels/final").mkdir(parents=True)
    if kind == "ct":
        raw = write_synthetic("btcv", root / "raw", num_train=3, num_test=0, shape=(64, 64, 24))
        for i, img in enumerate(sorted((raw / "RawData/Training/img").glob("*.nii.gz"))):
            shutil.copy(img, studies / f"case{i}.nii.gz")
            shutil.copy(raw / "RawData/Training/label" / img.name.replace("img", "label"),
                        studies / "labels/final" / f"case{i}.nii.gz")
    else:  # one 4-D file per case, channels in the bundle's input order T1c, T1, T2, FLAIR; the served label values
        for i in range(3):
            image, label = brats_phantom((48, 48, 32), seed=i, enhancing_value=3)
            affine = np.diag([1.0, 1.0, 1.0, 1.0])
            nib.save(nib.Nifti1Image(np.moveaxis(image, 0, -1).astype(np.float32), affine), studies / f"case{i}.nii.gz")
            nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), studies / "labels/final" / f"case{i}.nii.gz")
    return studies


def _request(url: str, method: str = "GET", body: dict | None = None, timeout: float = 600):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return response.read()


def _multipart_params(url: str, upload: tuple[str, bytes] | None = None) -> bytes:
    """POST /infer's form (empty params, optionally a file) and return the raw response."""
    return _multipart(url, files={"file": upload} if upload else None, timeout=600)[1]


def _http_error(url: str, upload: tuple[str, bytes] | None = None) -> tuple[int, str]:
    """The status and ``detail`` of an /infer request that is expected to fail."""
    with pytest.raises(urllib.error.HTTPError) as info:
        _multipart_params(url, upload)
    return info.value.code, json.loads(info.value.read())["detail"]


def _http_error_json(url: str, body: dict) -> tuple[int, str]:
    """The status and ``detail`` of a JSON POST that is expected to fail."""
    with pytest.raises(urllib.error.HTTPError) as info:
        _request(url, "POST", body)
    return info.value.code, json.loads(info.value.read())["detail"]


class Server:
    def __init__(self, tmp: Path, venv: Path, names: list[str], kind: str, port: int):
        self.studies = _studies(tmp, kind)
        bundles = _bundles_with_weights(tmp / "src", names)
        self.app = setup_app(tmp / "app", bundles, venv, values={**VALUES, **(BRATS_VALUES if kind == "brats" else {})})
        cmd, env = server_command(self.app, self.studies, names, port, venv)
        self.log = open(tmp / "server.log", "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = tmp / "server.log"
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"MONAI Label server exited:\n{self.log_path.read_text()[-4000:]}")
            try:
                self.info = json.loads(_request(f"{self.url}/info/", timeout=5))
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(2)
        self.stop()
        raise RuntimeError(f"MONAI Label server did not answer in 300 s:\n{self.log_path.read_text()[-4000:]}")

    def infer(self, model: str, image: str) -> nib.Nifti1Image:
        data = _multipart_params(f"{self.url}/infer/{model}?image={image}&output=image")
        path = self.app.parent / f"{model}_{uuid.uuid4().hex}.nii.gz"
        path.write_bytes(data)
        return nib.load(str(path))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expected_labels(name: str) -> dict:
    meta = json.loads((bundles_dir() / name / "configs/metadata.json").read_text())["network_data_format"]
    outputs = meta.get("post_processed_outputs") or meta["outputs"]
    channel_def = next(iter(outputs.values()))["channel_def"]
    return {v.lower(): int(k) for k, v in channel_def.items() if v.lower() != "background"}


@pytest.mark.parametrize("kind,names", [("ct", CT), ("brats", BRATS)], ids=["ct", "brats"])
def test_monailabel_serves_and_trains_bundles(venv, tmp_path, kind, names):
    server = Server(tmp_path, venv, names, kind, _free_port())
    try:
        for name in names:  # /info/: every bundle with its label names and values (BraTS: the label map)
            assert server.info["models"][name]["labels"] == _expected_labels(name), server.info["models"][name]
        if kind == "brats":
            assert server.info["models"][names[0]]["labels"] == {"necrotic tumor core": 1, "peritumoral edema": 2,
                                                                 "enhancing tumor": 3}
        image = nib.load(str(server.studies / "case0.nii.gz"))
        # a typo, a missing image and a cut upload are answered 404 / 422 with what is wrong, not a bare 500
        code, detail = _http_error(f"{server.url}/infer/{names[0]}x?image=case0&output=image")
        assert code == 404 and detail == f"unknown model '{names[0]}x'; this server serves: {', '.join(sorted(names))}."
        code, detail = _http_error(f"{server.url}/infer/{names[0]}?image=case9&output=image")
        assert code == 404 and detail.startswith("image 'case9' is not in the datastore (images: case0, "), detail
        cut = (server.studies / "case0.nii.gz").read_bytes()
        code, detail = _http_error(f"{server.url}/infer/{names[0]}?output=image", ("cut.nii.gz", cut[: len(cut) // 2]))
        assert code == 422 and detail.startswith("cannot read the image "), detail
        wrong = 1 if kind == "brats" else 2  # a CT model sent 2 channels, the BraTS model sent 1
        data = np.zeros((16, 16, 8, wrong) if wrong > 1 else (16, 16, 8), np.float32)
        path = tmp_path / "wrong.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        code, detail = _http_error(f"{server.url}/infer/{names[0]}?output=image", ("wrong.nii.gz", path.read_bytes()))
        takes = "4 (one 4-D NIfTI, channels last)" if kind == "brats" else "1 (a 3-D image)"
        assert code == 422 and detail.endswith(f" has {wrong} channel(s); model '{names[0]}' takes {takes}."), detail
        # a training that would validate on nothing (3 labelled images, val_split 0.1) and so write no weights
        with pytest.raises(urllib.error.HTTPError) as info:
            _request(f"{server.url}/train/{names[0]}?run_sync=true", "POST", {"max_epochs": 1, "val_split": 0.1})
        detail = json.loads(info.value.read())["detail"]
        assert info.value.code == 422, detail
        assert "the datastore has 3 labelled image(s) and val_split 0.1 holds out 0" in detail, detail
        for name in names:
            before = server.infer(name, "case0")
            assert before.shape[:3] == image.shape[:3] and np.allclose(before.affine, image.affine, atol=1e-4)
            assert set(np.unique(np.asarray(before.dataobj)).astype(int)) <= {0, *_expected_labels(name).values()}
            weights = server.app / "model" / name / "models/model.pt"
            old = hashlib.sha256(weights.read_bytes()).hexdigest()
            _request(f"{server.url}/train/{name}?run_sync=true", "POST",
                     {"max_epochs": 1, "val_split": 0.5, "multi_gpu": False, "device": "cpu"})
            assert hashlib.sha256(weights.read_bytes()).hexdigest() != old  # training wrote new weights
            after = server.infer(name, "case0")  # served from the new weights
            assert after.shape == before.shape
            assert not np.array_equal(np.asarray(after.dataobj), np.asarray(before.dataobj))
    except Exception:
        print(server.log_path.read_text()[-6000:])
        raise
    finally:
        server.stop()


def test_environment_build_is_resumable_and_shared_between_callers(tmp_path, monkeypatch):
    """A completed build is reused; an interrupted one (no marker) or changed requirements reinstall into it."""
    import threading

    from e2enet_monai.apps.monailabel import server as label_app

    calls, started = [], threading.Event()

    def fake_run(cmd, check):
        calls.append(cmd)
        if cmd[1:3] == ["-m", "venv"]:
            (Path(cmd[3]) / "bin").mkdir(parents=True)
            (Path(cmd[3]) / "bin/python").touch()
        else:
            started.set()
            time.sleep(0.3)  # a second caller arrives while pip runs
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(label_app.subprocess, "run", fake_run)
    venv = tmp_path / "ml-venv"
    first = threading.Thread(target=label_app.ensure_monailabel_venv, args=(venv,))
    first.start()
    started.wait(5)
    assert label_app.ensure_monailabel_venv(venv) == venv  # waited for the first build, then reused it
    first.join()
    assert [c[1:3] for c in calls] == [["-m", "venv"], ["-m", "pip"], ["-m", "pip"]]
    assert [c[-len(r):] for c, r in zip(calls[1:], label_app.MONAILABEL_REQUIREMENTS)] == \
        [list(r) for r in label_app.MONAILABEL_REQUIREMENTS]

    assert label_app.monailabel_venv_built(venv)
    calls.clear()
    (venv / ".e2enet-requirements.json").unlink()  # interrupted before completion: resumed in place
    assert not label_app.monailabel_venv_built(venv)
    label_app.ensure_monailabel_venv(venv)
    assert [c[1:3] for c in calls] == [["-m", "pip"], ["-m", "pip"]]
    calls.clear()
    label_app.ensure_monailabel_venv(venv)
    assert calls == []
    monkeypatch.setattr(label_app, "MONAILABEL_REQUIREMENTS", [["monailabel==0.8.6"]])  # changed: reinstalled
    label_app.ensure_monailabel_venv(venv)
    assert calls == [[str(venv / "bin/python"), "-m", "pip", "install", "-q", "monailabel==0.8.6"]]


def test_setup_refuses_weights_that_do_not_fit_and_takes_values_as_the_readme_writes_them(venv, tmp_path):
    """The README's `setup ... --values '{...}'` as a shell would pass it (fire makes a dict of it), and a bundle
    whose configs build another network than its weights is refused with the mismatch, leaving no app behind."""
    bundle = _bundles_with_weights(tmp_path / "src", ["e2enet_btcv_segmentation"])[0]  # CPU weights, full configs
    tool = (f"{sys.executable} {ROOT / 'tools/monailabel_app.py'} setup {tmp_path / 'app'} --bundles {bundle} "
            f"--venv {venv}")
    proc = subprocess.run(tool, shell=True, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "do not fit the network the configs build (E2ENet)" in last and "channels" in last, last
    assert not (tmp_path / "app").exists()
    values = json.dumps({k: VALUES[k] for k in ("channels", "strides", "patch_size", "epoch_length")})
    proc = subprocess.run(f"{tool} --values '{values}'", shell=True, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = json.loads((tmp_path / "app/model/e2enet_btcv_segmentation/configs/train.json").read_text())
    assert served["channels"] == VALUES["channels"] and served["epoch_length"] == VALUES["epoch_length"]


def _readme_monailabel_commands() -> list[str]:
    """The README's MONAI Label commands, as written: the first shell block of its "MONAI Label" section."""
    section = (ROOT / "README.md").read_text().split("\n## MONAI Label\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split(" #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def _parts(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart reply, by their form names."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()}


def _nrrd(data: bytes) -> tuple[dict[str, str], np.ndarray]:
    """Header fields and voxels (x fastest, as NRRD stores them) of an NRRD file."""
    header, _, payload = data.partition(b"\n\n")
    fields = {}
    for line in header.decode().splitlines()[1:]:
        if line and not line.startswith("#"):
            key, _, value = line.partition(":")
            fields[key.strip()] = value.lstrip("=").strip()
    if fields.get("encoding") in ("gzip", "gz"):
        payload = gzip.decompress(payload)
    dtype = {"unsigned char": np.uint8, "uchar": np.uint8, "uint8": np.uint8}[fields["type"]]
    sizes = [int(v) for v in fields["sizes"].split()]
    return fields, np.frombuffer(payload, dtype=dtype).reshape(sizes[::-1]).transpose()


def _lps_geometry(fields: dict[str, str]) -> np.ndarray:
    """The 4x4 voxel-to-LPS matrix an NRRD header describes."""
    vectors = [[float(v) for v in d.strip("()").split(",")] for d in fields["space directions"].split()]
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(vectors).T
    matrix[:3, 3] = [float(v) for v in fields["space origin"].strip("()").split(",")]
    return matrix


SLICER = json.dumps(SLICER_PARAMS)


def test_readme_commands_and_3d_slicer_requests_on_the_demo_bundle(venv, demo, tmp_path):
    """
    The README's three MONAI Label commands, exactly as written, in a folder laid out as a clone after the main
    command (tools/, demo_output/), only the studies folder and the port replaced; then the requests 3D Slicer's
    MONAI Label module sends: an upload by PUT /datastore/?image=, /infer by image id with the NRRD params and no
    output (a multipart reply whose NRRD has the uploaded image's grid in LPS), the same with the top-k model that
    setup adds, an /infer on an uploaded file, a label save, /info/, /datastore/ and a label save answered within
    a second while an inference runs, and a training request whose new weights change the next inference.
    """
    work, _, _ = demo("btcv")
    name = "e2enet_btcv_segmentation"
    install, setup, start = _readme_monailabel_commands()
    assert setup == f"python tools/monailabel_app.py setup apps/e2enet --bundles demo_output/{name}"
    assert start == "python tools/monailabel_app.py start apps/e2enet /data/my_studies --port 8000"
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "tools").symlink_to(ROOT / "tools")
    (clone / "demo_output").symlink_to(work)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in (install, setup):
        proc = subprocess.run(line, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    # the datastore: two labelled training phantoms of the demo
    studies = tmp_path / "studies"
    (studies / "labels/final").mkdir(parents=True)
    for img in sorted((work / "data/RawData/Training/img").glob("*.nii.gz"))[:2]:
        shutil.copy(img, studies / img.name)
        shutil.copy(work / "data/RawData/Training/label" / img.name.replace("img", "label"),
                    studies / "labels/final" / img.name)
    port = _free_port()
    line = start.replace("/data/my_studies", str(studies)).replace("--port 8000", f"--port {port}")
    log_path = tmp_path / "server.log"
    log = open(log_path, "w")
    # a process group to stop whole, not a session: Linux's autogroup scheduling would give a new session half the
    # CPU against the tests' session, whose demos run at idle priority, and the server's threads would wait for theirs
    server = subprocess.Popen(line, shell=True, cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                              process_group=0)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None and time.time() < deadline, log_path.read_text()[-4000:]
            try:
                info = json.loads(_request(f"{url}/info/", timeout=5))
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(2)
        fast = name + "_fast"
        assert set(info["models"]) == {name, fast} and set(info["trainers"]) == {name}
        assert info["models"][name]["labels"] == info["models"][fast]["labels"] == _expected_labels(name)

        # upload as Slicer does: an image stored left-posterior-superior, so the geometry check means something
        source = nib.load(str(sorted((work / "data/RawData/Testing/img").glob("*.nii.gz"))[0]))
        ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(source.affine),
                                               nib.orientations.axcodes2ornt(("L", "P", "S")))
        image = source.as_reoriented(ornt)
        upload = tmp_path / "upload.nii.gz"
        nib.save(image, upload)
        _multipart(f"{url}/datastore/?image=ct_upload", "PUT", {"params": "{}"},
                   {"file": ("ct_upload.nii.gz", upload.read_bytes())})
        assert "ct_upload" in json.loads(_request(f"{url}/datastore/?output=all"))["objects"]
        expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine  # RAS to LPS
        seconds, labels = {}, {}
        for model in (name, fast):
            t0 = time.time()
            content_type, body = _multipart(f"{url}/infer/{model}?image=ct_upload", fields={"params": SLICER})
            seconds[model] = time.time() - t0
            parts = _parts(content_type, body)
            assert set(parts) == {"params", "image"}, list(parts)
            fields, labels[model] = _nrrd(parts["image"])
            assert fields["space"] == "left-posterior-superior"
            assert labels[model].shape == image.shape
            assert np.allclose(_lps_geometry(fields), expected, atol=1e-4), (fields, expected)
            assert set(np.unique(labels[model])) <= {0, *_expected_labels(name).values()}
            assert len(np.unique(labels[model])) > 3  # the trained demo finds organs
        print(f"MONAI Label /infer of a {image.shape} phantom: " +
              ", ".join(f"{m} {s:.1f} s" for m, s in seconds.items()))
        # Slicer's "run on this volume" without uploading first: the image as a file part, no image id
        content_type, body = _multipart(f"{url}/infer/{name}?image=", fields={"params": SLICER},
                                        files={"file": ("volume.nii.gz", upload.read_bytes())})
        assert np.array_equal(_nrrd(_parts(content_type, body)["image"])[1], labels[name])

        # the server keeps answering while an inference runs: a larger volume (the phantom tiled 2 x 2 x 1, about
        # 10 s of sliding window where the requests below take well under 4 s), inferred in the background
        big = tmp_path / "big.nii.gz"
        nib.save(nib.Nifti1Image(np.tile(np.asarray(image.dataobj), (2, 2, 1)), image.affine), big)
        _multipart(f"{url}/datastore/?image=ct_big", "PUT", {"params": "{}"}, {"file": ("ct_big.nii.gz",
                                                                                 big.read_bytes())})
        running = threading.Thread(target=_multipart, args=(f"{url}/infer/{name}?image=ct_big",),
                                   kwargs={"fields": {"params": SLICER}})
        running.start()
        time.sleep(1.0)
        waits = {}
        for what, call in (("info", lambda: _request(f"{url}/info/", timeout=30)),
                           ("datastore", lambda: _request(f"{url}/datastore/?output=all", timeout=30)),
                           ("label save", lambda: _multipart(
                               f"{url}/datastore/label?image=ct_upload&tag=final", "PUT", {"params": "{}"},
                               {"label": ("ct_upload.nrrd", parts["image"])}, timeout=30))):
            t0 = time.time()
            call()
            waits[what] = time.time() - t0
        still_running = running.is_alive()
        running.join()
        assert still_running, "the inference ended before the other requests were timed: make the volume larger"
        assert all(w < 1.0 for w in waits.values()), waits
        stored = json.loads(_request(f"{url}/datastore/?output=all"))["objects"]["ct_upload"]
        assert "final" in stored["labels"]

        # training on the three labelled images writes new weights, and the next inference uses them
        code, detail = _http_error_json(f"{url}/train/{fast}?run_sync=true", {"max_epochs": 1})
        assert code == 404 and detail == f"unknown model '{fast}'; this server trains: {name}."
        weights = clone / "apps/e2enet/model" / name / "models/model.pt"
        old = hashlib.sha256(weights.read_bytes()).hexdigest()
        _request(f"{url}/train/{name}?run_sync=true", "POST", {"max_epochs": 1, "val_split": 0.5})
        assert hashlib.sha256(weights.read_bytes()).hexdigest() != old
        content_type, body = _multipart(f"{url}/infer/{name}?image=ct_upload", fields={"params": SLICER})
        assert not np.array_equal(_nrrd(_parts(content_type, body)["image"])[1], labels[name])
    except Exception:
        print(log_path.read_text()[-6000:])
        raise
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
