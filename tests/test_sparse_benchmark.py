"""tools/benchmark_sparse.py's bookkeeping: which runs it trains and how it folds the mask seeds into one row each.

The training itself (thirteen real bundle runs by default; eleven took about 45 minutes on 2 cores in the README's
run) is what the tool exists for and is not repeated here; each run's own measurements are replaced by a stand-in
that records what it was asked to train."""

import math
import re
import runpy
import statistics
from pathlib import Path

import pytest

import e2enet_monai.benchmarks.sparse_training as sparse_training

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def recorded(monkeypatch):
    calls = []

    def train_and_evaluate(folder, bundle_name, iterations, run):
        calls.append((folder.name, run))
        seed = run["sparse_seed"] if run["sparse_training"] else 0
        dice = 0.5 + 0.1 * seed + (0.2 if run["sparse_distribution"] == "erk" else 0.0)
        return {"mean_dice": dice, "mesh_density": 0.2 if run["sparse_training"] else 1.0,
                "params_nonzero": 90 + seed, "params_total": 150, "gflops_true": 0.4,
                "seconds_per_iteration": 0.3 + 0.1 * seed,
                "per_class_dice": {"spleen": dice, "esophagus": float("nan") if seed else 0.0}}

    monkeypatch.setattr(sparse_training, "_train_and_evaluate", train_and_evaluate)
    monkeypatch.setattr(sparse_training, "write_synthetic", lambda *args, **kwargs: None)
    monkeypatch.setattr(sparse_training, "prepare_dataset", lambda *args, **kwargs: None)
    return calls


def test_each_sparse_kind_runs_once_per_mask_seed_and_dense_once(recorded, tmp_path):
    rows = sparse_training.benchmark_sparse_training(tmp_path / "work", "btcv", sparse_seeds=(0, 2))
    assert [r["run"] for r in rows] == [label for label, *_ in sparse_training.RUNS.values()]
    asked = [(run["sparse_training"], run["sparse_structure"], run["sparse_distribution"],
              run["sparse_channel_multiple"], run["sparse_death_rate"], run["sparse_seed"]) for _, run in recorded]
    assert asked == [(False, "kernel", "uniform", 1, 0.5, 0),
                     (True, "kernel", "uniform", 1, 0.5, 0), (True, "kernel", "uniform", 1, 0.5, 2),
                     (True, "channel", "uniform", 1, 0.5, 0), (True, "channel", "uniform", 1, 0.5, 2),
                     (True, "channel", "erk", 1, 0.5, 0), (True, "channel", "erk", 1, 0.5, 2),
                     (True, "channel", "uniform", 4, 0.5, 0), (True, "channel", "uniform", 4, 0.5, 2),
                     (True, "channel", "uniform", 8, 0.5, 0), (True, "channel", "uniform", 8, 0.5, 2),
                     (True, "channel", "uniform", 8, 0.2, 0), (True, "channel", "uniform", 8, 0.2, 2)]
    assert len({folder for folder, _ in recorded}) == 13  # every run trains its own copy of the bundle
    assert all(run["channels"] == [8, 16, 32, 64] and run["epochs"] * run["epoch_length"] == 600 for _, run in recorded)
    dense, kernel, _, erk, *_ = rows
    assert dense["sparse_seeds"] == [] and dense["dice_per_seed"] == [0.5]
    assert kernel["dice_per_seed"] == [0.5, pytest.approx(0.7)] and kernel["mean_dice"] == pytest.approx(0.6)
    assert erk["mean_dice"] == pytest.approx(0.8) and kernel["params_nonzero"] == 91
    assert kernel["seconds_per_iteration"] == pytest.approx(statistics.median([0.3, 0.5]))
    assert kernel["per_class_dice"]["spleen"] == pytest.approx(0.6)
    assert math.isnan(kernel["per_class_dice"]["esophagus"])  # absent in one run: not averaged into a number


def test_report_lists_the_per_seed_dice(recorded, tmp_path):
    rows = sparse_training.benchmark_sparse_training(tmp_path / "work", "btcv", sparse_seeds=(0, 1))
    md, js = sparse_training.write_sparse_report(rows, tmp_path, "header")
    table = md.read_text()
    assert "| run | mean Dice | per mask seed |" in table
    assert "| dense | 0.500 | - | 1.000 |" in table and "| sparse 0.2 (channel, erk) | 0.750 | 0.700, 0.800 |" in table
    assert js.is_file()


def test_no_mask_seed_is_refused_before_any_work(recorded, tmp_path):
    with pytest.raises(ValueError, match="at least one mask seed"):
        sparse_training.benchmark_sparse_training(tmp_path / "work", "btcv", sparse_seeds=())
    assert recorded == [] and not (tmp_path / "work").exists()


def test_chosen_runs_train_in_table_order_with_the_overridden_mesh(recorded, tmp_path):
    rows = sparse_training.benchmark_sparse_training(tmp_path / "work", "btcv", sparse_seeds=(0,),
                                                     overrides={"channels": [16, 32, 64, 128]},
                                                     runs=["channel_x8", "kernel"])
    assert [r["run"] for r in rows] == ["sparse 0.2 (kernel)", "sparse 0.2 (channel, multiples of 8)"]
    assert [(run["sparse_structure"], run["sparse_channel_multiple"]) for _, run in recorded] == [("kernel", 1),
                                                                                                 ("channel", 8)]
    assert all(run["channels"] == [16, 32, 64, 128] and run["strides"] == [1, 2, 2, 2] for _, run in recorded)


def test_unknown_run_or_wrong_widths_are_refused_before_any_work(recorded, tmp_path):
    with pytest.raises(ValueError, match=r"runs must name some of \['dense', 'kernel'.*got \['kernels'\]"):
        sparse_training.benchmark_sparse_training(tmp_path / "work", "btcv", runs=["kernels"])
    tool = runpy.run_path(str(ROOT / "tools/benchmark_sparse.py"))  # fire is only called as __main__
    with pytest.raises(ValueError, match=re.escape(
            "--channels needs 4 widths, one per level of the demo network (strides [1, 2, 2, 2]); got [16, 32, 64].")):
        tool["main"](workdir=str(tmp_path / "work"), out_dir=str(tmp_path), channels="16,32,64")
    assert recorded == [] and not (tmp_path / "work").exists()
