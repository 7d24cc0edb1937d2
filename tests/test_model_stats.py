import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from e2enet_monai.benchmarks.model_stats import (
    collect_model_stats,
    flop_counts,
    load_checkpoint_masks,
    machine_label,
    parameter_counts,
)
from e2enet_monai.networks import E2ENet
from e2enet_monai.networks.nets import nnunet_like_dynunet
from e2enet_monai.sparse import KernelMasks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sparse_pair():
    torch.manual_seed(0)  # not the RNG state earlier tests leave: one of 18M random weights can be exactly 0
    net = E2ENet(3, 1, 16)
    return net, KernelMasks.random(net, 0.2, seed=0)


def test_nonzero_parameters_at_density_0_2(sparse_pair):
    net, masks = sparse_pair
    counts = parameter_counts(net, masks)
    assert counts["total"] == sum(p.numel() for p in net.parameters())
    assert abs(counts["nonzero"] - 9.44e6) / 9.44e6 < 0.02
    masks.apply(net)  # the masked tensors really hold that many non-zeros (Kaiming-initialised, so none is 0 by chance)
    active, masked_total = masks.weight_counts(net)
    params = dict(net.named_parameters())
    assert sum(int(params[n].count_nonzero()) for n in masks.masks) == active
    assert counts["nonzero"] == counts["total"] - masked_total + active


def test_flops_against_nnunet_like_baseline_at_128(sparse_pair):
    net, masks = sparse_pair
    e2e = flop_counts(net, 1, (128, 128, 128), masks)
    dense = flop_counts(net, 1, (128, 128, 128))
    base = flop_counts(nnunet_like_dynunet(1, 16), 1, (128, 128, 128))
    assert e2e["paper"] / base["paper"] == pytest.approx(0.73, abs=0.03)
    assert e2e["true"] / base["true"] == pytest.approx(0.59, abs=0.03)
    # paper-convention absolute values of the spec (GFLOPs), to 1 %
    assert dense["paper"] / 1e9 == pytest.approx(3069.6, rel=0.01)
    assert e2e["paper"] / 1e9 == pytest.approx(778.7, rel=0.01)
    assert base["paper"] / 1e9 == pytest.approx(1067.9, rel=0.01)
    assert base["true"] / 1e9 == pytest.approx(957, rel=0.01)


def test_flop_count_leaves_model_usable(sparse_pair):
    net, _ = sparse_pair
    flop_counts(net, 1, (64, 64, 64))
    assert not any(p.is_meta for p in net.parameters())


def test_masks_read_from_a_checkpoint(tmp_path):
    net = E2ENet(3, 1, 4, channels=(8, 16, 32), strides=(1, 2, 2), deep_supr_num=1)
    masks = KernelMasks.random(net, 0.3, seed=3)
    masks.apply(net)
    torch.save({"model": net.state_dict()}, tmp_path / "model.pt")
    fresh = E2ENet(3, 1, 4, channels=(8, 16, 32), strides=(1, 2, 2), deep_supr_num=1)
    read = load_checkpoint_masks(fresh, tmp_path / "model.pt")
    assert read.masks.keys() == masks.masks.keys()
    assert all(torch.equal(read.masks[k], masks.masks[k]) for k in masks.masks)


def test_rows_without_timing():
    rows = collect_model_stats(["e2enet", "dynunet"], 1, 16, [64], density=0.2, timing=False)
    assert [r["network"] for r in rows] == ["e2enet (dense mesh)", "e2enet (density 0.2, uniform)", "dynunet"]
    assert rows[1]["params_nonzero"] < rows[0]["params_nonzero"] == rows[0]["params_total"]


def test_channel_aligned_row_counts_the_flops_of_the_compacted_network():
    from e2enet_monai.networks.nets.baselines import build_network
    from e2enet_monai.sparse import compact_model

    rows = collect_model_stats(["e2enet"], 1, 16, [64], density=0.2, timing=False, channel_multiple=16)
    assert rows[1]["network"] == "e2enet (density 0.2, uniform, channels in multiples of 16)"
    net = build_network("e2enet", 1, 16)
    masks = KernelMasks.random(net, 0.2, seed=0, structure="channel", channel_multiple=16)
    keep = compact_model(net, masks)
    assert all(len(channels) % 16 == 0 for channels in keep.values())  # 16 of the 96 level-0 channels, not 19
    # the row counts active kernels; the compacted network's transposed convolutions compute the kept outputs from
    # every input channel instead of all outputs from the kept inputs: a small difference in the mesh's upsampling
    assert rows[1]["gflops_true"] * 1e9 == pytest.approx(flop_counts(net, 1, [64] * 3)["true"], rel=0.01)


def test_cli_writes_table_and_json_with_timing(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "model_stats.py"), "--networks", "e2enet,segresnet", "--patch", "64",
         "--density", "0.2", "--runs", "1", "--threads", "1", "--out_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "model_stats.json").read_text())
    assert len(data["rows"]) == 3
    for row in data["rows"]:
        assert row["latency_s"] > 0 and row["peak_mib"] > 0
    dense, masked = data["rows"][:2]  # the masked network runs at the dense cost: measured once, reported for both
    assert (masked["latency_s"], masked["peak_mib"]) == (dense["latency_s"], dense["peak_mib"])
    table = (tmp_path / "model_stats.md").read_text()
    assert "| e2enet (density 0.2, uniform) | 64x64x64 |" in table and "Machine:" in table


def test_cli_help_documents_every_option():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "model_stats.py"), "--help"],
                         capture_output=True, text=True, timeout=120, env={"PAGER": "cat", "PATH": ""})
    text = out.stdout + out.stderr
    for option in ("networks", "in_channels", "out_channels", "patch", "density", "distribution", "checkpoint",
                   "seed", "runs", "threads", "timing", "channel_multiple", "out_dir"):
        assert f"--{option}" in text


def test_machine_label_names_the_cpu_its_vector_instructions_and_the_threads():
    """CPUs sold under one name (AMD EPYC with and without AVX-512, Zen 1 and Zen 3) time differently: the header
    says which, by the vector instructions PyTorch uses and by the family and model numbers of ``/proc/cpuinfo``."""
    label = machine_label(1)
    block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in block.splitlines()))
    kind = f"family {fields['cpu family']} model {fields['model']}, " if "cpu family" in fields else ""
    assert label.startswith(fields.get("model name", ""))
    vector = torch.backends.cpu.get_cpu_capability()
    assert f" ({kind}{vector}), 1 thread(s) of {os.cpu_count()} CPU(s), torch " in label
