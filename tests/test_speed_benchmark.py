"""tools/benchmark_speed.py's measurement: interleaved runs, medians and ratios from the same run, the report."""

import importlib.util
import json
import shlex
import statistics
from pathlib import Path

import fire
import pytest

from e2enet_monai.benchmarks.speed import BASELINE, benchmark_speed, write_speed_report


def test_rows_are_medians_of_interleaved_runs_with_ratios_to_the_baseline_of_the_same_runtime(tmp_path):
    without = "e2enet (dense without NNPACK)"  # torch only: the exported network has no NNPACK path
    nets = ["e2enet (channel-sparse 0.2 compacted)", without, BASELINE]  # the compacted network exports too
    rows = benchmark_speed([(64, 32, 32)], threads=[1], repeats=3, networks=nets, runtimes=["torch", "onnxruntime"],
                           reuse_memory=False)
    assert [(r["runtime"], r["network"]) for r in rows] == [("torch", n) for n in nets] + [
        ("onnxruntime", n) for n in nets if n != without]
    assert all(r["threads"] == 1 and r["shape"] == [64, 32, 32] for r in rows)
    for r in rows:
        base = next(b for b in rows if b["network"] == BASELINE and b["runtime"] == r["runtime"])
        assert len(r["runs"]) == 3 and r["seconds"] == statistics.median(r["runs"]) > 0
        assert r["vs_baseline"] == pytest.approx(r["seconds"] / base["seconds"])
    written = write_speed_report(rows, tmp_path, "header line")
    md = written[0].read_text()
    assert md.startswith("header line") and md.count("| 64x32x32 | 1 | onnxruntime |") == 2 and "| 1.00x |" in md
    assert json.loads(written[1].read_text())["rows"] == rows
    assert len(written) == 3 and written[2].stat().st_size > 0  # the plot (matplotlib is in the test extra)


def test_unknown_network_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"networks must be among .* \(got \['unet', 'tensorrt'\]\)"):
        benchmark_speed([(64, 32, 32)], networks=["unet"], runtimes=["tensorrt"])


def test_default_network_list_of_the_cli_splits_back_into_the_labels():
    from e2enet_monai.benchmarks.speed import SPEED_NETWORKS
    from e2enet_monai.utils.cli import as_list

    assert as_list(",".join(SPEED_NETWORKS)) == list(SPEED_NETWORKS)  # tools/benchmark_speed.py's default


def _killed_worker(spec, queue):  # module level: the spawned process imports it
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does to a runtime that outgrows the machine


def test_a_killed_measuring_process_is_reported_with_what_to_do():
    from e2enet_monai.benchmarks.process import run_in_fresh_process

    with pytest.raises(RuntimeError, match=r"speed benchmark in openvino: the measuring process died \(exit code -9\) "
                                           r"without a result\. It was killed \(SIGKILL\), most likely by the "
                                           r"out-of-memory killer: measure fewer networks"):
        run_in_fresh_process(_killed_worker, {}, "speed benchmark in openvino")


def test_report_header_gives_the_command_that_reproduces_a_run_of_some_networks(tmp_path, monkeypatch):
    """The header's command gives the CLI the same arguments as the run it describes, the network subset included."""
    spec = importlib.util.spec_from_file_location("benchmark_speed_cli",
                                                  Path(__file__).resolve().parents[1] / "tools/benchmark_speed.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    monkeypatch.chdir(tmp_path)
    args = ["--shapes", "64x32x32", "--threads", "1", "--repeats", "1", "--runtimes", "torch", "--networks", BASELINE]
    fire.Fire(cli.main, command=args)
    report = json.loads((tmp_path / "benchmark_output/benchmark_speed.json").read_text())
    assert [r["network"] for r in report["rows"]] == [BASELINE]
    command = shlex.split(report["header"].split("Command: ")[1])
    assert command[:2] == ["python", "tools/benchmark_speed.py"]
    given = dict(zip(command[2::2], command[3::2]))
    assert given == {**dict(zip(args[::2], args[1::2])), "--reuse_memory": "True"}
