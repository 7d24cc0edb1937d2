"""Inference runtimes: sliding window with the network exported to ONNX and run by ONNX Runtime or OpenVINO."""

import json
import subprocess

import nibabel as nib
import numpy as np
import pytest
import torch
import warm
from bundle_copies import btcv_case as make_btcv_case
from docs_commands import docs_command
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer

import e2enet_monai.inferers.runtime as runtime
from e2enet_monai.apps.runner import bundle_command
from e2enet_monai.inferers import RuntimeInferer, TopKPatchInferer
from e2enet_monai.networks import E2ENet
from e2enet_monai.utils.errors import InputError

RUNTIMES = ["onnxruntime", "openvino"]


@pytest.mark.parametrize("backend", RUNTIMES)
def test_runtime_sliding_window_equals_torch_and_exports_once(backend, monkeypatch):
    pytest.importorskip(backend)
    torch.manual_seed(0)
    net = E2ENet(in_channels=1, out_channels=4, channels=(8, 16, 32), strides=(1, 2, (1, 2, 2))).eval()
    x = torch.randn(1, 1, 23, 40, 37)  # several windows, the last ones clamped to the edge, an odd size
    sw = SlidingWindowInferer((16, 24, 24), overlap=0.5, mode="gaussian")
    exports = []
    export = runtime._export
    monkeypatch.setattr(runtime, "_export", lambda *args: exports.append(args[1].shape) or export(*args))
    inferer = RuntimeInferer(sw, backend)
    with torch.no_grad():
        expected = sw(x, net)
        got = inferer(x, net)
        again = inferer(x, net)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert torch.equal(got, again)
    assert exports == [torch.Size([1, 1, 16, 24, 24])]  # one export for every window of both calls


def test_unknown_backend_and_top_k_with_a_runtime_are_refused():
    sw = SlidingWindowInferer((16, 24, 24))
    with pytest.raises(InputError, match=r"inference_backend must be one of \('torch', 'onnxruntime', 'openvino'\), "
                                         r"got 'tensorrt'"):
        RuntimeInferer(sw, "tensorrt")
    with pytest.raises(InputError, match="runs sliding-window inference only, got TopKPatchInferer"):
        RuntimeInferer(TopKPatchInferer(k=5), "onnxruntime")
    assert RuntimeInferer(TopKPatchInferer(k=5), "torch").backend == "torch"


@pytest.fixture(scope="module")
def btcv_case(tmp_path_factory):
    return make_btcv_case(tmp_path_factory.mktemp("runtime"))


def _run(bundle, image, out, configs=("inference.json",), **overrides):
    cmd = bundle_command(bundle, configs, {"datalist": json.dumps([str(image)]), "output_dir": str(out), **overrides})
    return warm.run(cmd, capture_output=True, text=True, timeout=600)


def test_documented_onnxruntime_command_gives_the_torch_labels(btcv_case, tmp_path):
    """The bundle docs' --inference_backend command, as written, against the same bundle's torch inference."""
    pytest.importorskip("onnxruntime")
    bundle, image = btcv_case
    case = image.name[: -len(".nii.gz")]
    proc = _run(bundle, image, tmp_path / "torch")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = docs_command(bundle, "configs/inference.json", ["inference_backend"], **{
        "\"['/path/a.nii.gz']\"": f"\"['{image}']\"", "--output_dir out": f"--output_dir {tmp_path / 'onnxruntime'}"})
    assert line.endswith("--inference_backend onnxruntime")
    proc = subprocess.run(line, shell=True, cwd=bundle, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = {backend: np.asarray(nib.load(str(tmp_path / backend / case / f"{case}_seg.nii.gz")).dataobj)
              for backend in ("torch", "onnxruntime")}
    assert labels["torch"].shape == tuple(nib.load(str(image)).shape)
    assert len(np.unique(labels["torch"])) > 1  # random weights still give several classes: a real comparison
    # float32 round-off of another runtime could flip a voxel whose two best classes tie to 1e-5
    assert (labels["onnxruntime"] != labels["torch"]).mean() < 1e-4


def test_bundle_refuses_top_k_with_a_runtime_in_one_line_before_any_work(btcv_case, tmp_path):
    pytest.importorskip("onnxruntime")
    bundle, image = btcv_case
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs/inference.json"), str(bundle / "configs/inference_topk.json")])
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, bundle / "models/model_topk.pt")
    proc = _run(bundle, image, tmp_path / "out", ("inference.json", "inference_topk.json"),
                inference_backend="onnxruntime")
    assert proc.returncode == 1 and not (tmp_path / "out").exists()
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: inference_backend 'onnxruntime' runs sliding-window inference only, got TopKPatchInferer (top-k "
        "inference calls the network's parts on volumes of every size): use inference_backend 'torch' with it.")
