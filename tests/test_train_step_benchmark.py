"""tools/benchmark_train_step.py: both variants of the demo network's training step, interleaved, with medians."""

import json
import statistics

import pytest

from e2enet_monai.benchmarks.train_step import (
    BASELINE,
    TRAIN_STEP_VARIANTS,
    benchmark_train_step,
    write_train_step_report,
)


def test_rows_are_medians_with_ratios_and_both_variants_compute_the_same_first_step(tmp_path):
    rows = benchmark_train_step(threads=[1], steps=3, patch=(16, 24, 24))
    assert [r["variant"] for r in rows] == list(TRAIN_STEP_VARIANTS)
    base = next(r for r in rows if r["variant"] == BASELINE)
    for r in rows:
        assert r["threads"] == 1 and len(r["runs"]) == 3 and r["seconds"] == statistics.median(r["runs"]) > 0
        assert r["vs_baseline"] == pytest.approx(r["seconds"] / base["seconds"])
        # same weights and data: the same loss up to the convolutions' float round-off
        assert r["first_loss"] == pytest.approx(base["first_loss"], rel=1e-5)
    md, js = write_train_step_report(rows, tmp_path, "header line")
    assert md.read_text().startswith("header line") and "| nn.Conv3d throughout | 1 |" in md.read_text()
    assert json.loads(js.read_text())["rows"] == rows


def test_bad_arguments_are_refused_before_any_work():
    with pytest.raises(ValueError, match=r"need steps >= 1 \(got 0\), a 3D patch \(got \[32, 48\]\)"):
        benchmark_train_step(steps=0, patch=(32, 48))
