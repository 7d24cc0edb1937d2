"""Sliding window vs top-k patch inference of a bundle on full-size synthetic CT, side by side in one run (CPU)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from e2enet_monai.apps.demo import CPU_DEMO_OVERRIDES, GLOBAL_CPU_OVERRIDES, TOPK_CPU_OVERRIDES, TOPK_NETWORK_IDS
from e2enet_monai.apps.runner import run_bundle
from e2enet_monai.benchmarks.process import run_in_fresh_process
from e2enet_monai.benchmarks.report import write_report
from e2enet_monai.bundle.registry import SHIPPED_BUNDLES, bundles_dir
from e2enet_monai.data import prepare_dataset, write_synthetic
from e2enet_monai.utils.io import atomic_write_bytes

__all__ = [
    "LOCAL_NETWORKS", "SW_BENCHMARK_OVERRIDES", "benchmark_inference", "benchmark_shipped_inference", "command_line",
    "write_inference_report", "write_shipped_report",
]

# sliding-window training on full-size phantoms, on top of the CPU demo settings: the demo's learning rate (0.02)
# diverges on 250x274x274 volumes and one organ per 3 patches leaves each organ in ~3% of the crops, so the
# benchmark uses a lower rate, 90% organ-centred patches, twice the iterations and no intensity augmentation
# (the held-out phantoms come from the same generator; organs differ by 5-15 HU, less than the augmented shifts)
SW_BENCHMARK_OVERRIDES = {
    "learning_rate": 0.003,
    "pos_fraction": 0.9,
    "aug_prob": 0.0,
    "epochs": 12,
    "val_interval": 12,
}

DATA_SETTINGS = ("shape", "spacing", "num_train", "num_test", "seed")
# defaults of the accuracy-and-time comparison: full-size CT phantoms, and the top-k settings (0 is the global
# network alone, -1 every candidate)
DEFAULT_SHAPE = (512, 512, 200)
DEFAULT_SPACING = (0.8, 0.8, 2.5)
DEFAULT_KS = (0, 1, 3, 5, 10, 30, 100, -1)
ALL_CANDIDATES = 10**6  # topk_k that refines every candidate (K is clipped to the candidate count)
TRAINING_STAGES = (
    ("train", ["train.json"]),
    ("train_global", ["train.json", "train_topk.json", "train_global.json"]),
    ("train_topk", ["train.json", "train_topk.json"]),
)


def _dice(pred: np.ndarray, label: np.ndarray, num_classes: int) -> float:
    """Mean Dice over the foreground classes present in the label or the prediction."""
    scores = []
    for c in range(1, num_classes):
        p, t = pred == c, label == c
        if t.any() or p.any():
            scores.append(2.0 * np.logical_and(p, t).sum() / (p.sum() + t.sum()))
    return float(np.mean(scores)) if scores else float("nan")


def _worker(spec: dict, queue: mp.Queue) -> None:  # runs in a fresh process: clean peak-memory reading
    try:
        import resource

        import torch
        from monai.bundle import ConfigParser
        from torch.utils.flop_counter import FlopCounterMode

        from e2enet_monai.utils.memory import reuse_freed_memory
        from e2enet_monai.utils.patches import CandidateGrid

        reuse_freed_memory()  # as every bundle run does first
        torch.set_num_threads(spec["threads"])
        bundle = Path(spec["bundle"])
        parser = ConfigParser()
        parser.read_config([str(bundle / "configs" / c) for c in spec["configs"]])
        parser.update({"bundle_root": str(bundle), "output_dir": spec["output_dir"], "device": "$torch.device('cpu')",
                       **spec["overrides"]})
        network = parser.get_parsed_content("network_def").eval()
        state = torch.load(parser.get_parsed_content("checkpoint"), map_location="cpu", weights_only=True)
        network.load_state_dict(state["model"])
        preprocessing = parser.get_parsed_content("preprocessing")
        postprocessing = parser.get_parsed_content("postprocessing")
        inferer = parser.get_parsed_content("inferer")
        num_classes = parser.get_parsed_content("num_classes")
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rows = []
        for image, label in spec["cases"]:
            t0 = time.perf_counter()
            data = preprocessing({"image": image})
            t1 = time.perf_counter()
            with torch.no_grad():
                logits = inferer(data["image"][None], network)
            t2 = time.perf_counter()
            data["pred"] = logits[0]
            seg = postprocessing(data)["pred"]
            t3 = time.perf_counter()
            dice = (_dice(np.asarray(seg).squeeze(0), np.asarray(nib.load(label).dataobj), num_classes)
                    if label else float("nan"))
            rows.append({"pipeline_s": t3 - t0, "network_s": t2 - t1, "shape": list(data["image"].shape[1:]),
                         "dice": dice})
        # FLOPs: the network calls the method makes, each counted once on the meta device
        shape = rows[-1]["shape"]
        roi = list(parser.get_parsed_content("patch_size"))
        local = network.local_net if hasattr(network, "local_net") else network
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            local.to("meta")(torch.empty(1, spec["in_channels"], *roi, device="meta"))
        local_flops = counter.get_total_flops()
        windows = len(CandidateGrid.build([max(s, r) for s, r in zip(shape, roi)], roi, 0.5))
        if hasattr(network, "global_net"):
            counter = FlopCounterMode(display=False)
            padded = network.padded_size([max(s, r) for s, r in zip(shape, roi)])
            small = [p // network.downsample for p in padded]
            with counter, torch.no_grad():
                network.global_net.to("meta")(torch.empty(1, spec["in_channels"], *small, device="meta"))
            k = min(spec["k"], windows)
            flops = counter.get_total_flops() + k * local_flops
        else:
            k, flops = windows, windows * local_flops
        queue.put({"rows": rows, "flops": float(flops), "patches": k, "windows": windows,
                   "peak_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024})
    except Exception as err:  # reported to the parent with the method's name
        queue.put({"error": f"{type(err).__name__}: {err}"})


def _measure(spec: dict) -> dict:
    return run_in_fresh_process(_worker, spec, f"inference benchmark of {spec['method']}")


def _write_phantoms(work: Path, settings: dict) -> None:
    """Training phantoms with their datalist in ``work/data``, held-out ones in ``work/held_out``."""
    raw, held_out = work / "data", work / "held_out"
    shape, spacing, seed = tuple(settings["shape"]), tuple(settings["spacing"]), settings["seed"]
    write_synthetic("btcv", raw, num_train=settings["num_train"], num_test=0, shape=shape, spacing=spacing, seed=seed)
    prepare_dataset("btcv", raw, raw / "datalist.json")
    write_synthetic("btcv", held_out, num_train=settings["num_test"], num_test=0, shape=shape, spacing=spacing,
                    seed=seed + 10_000)


def _config_digest(bundle: Path, configs: Sequence[str]) -> str:
    """sha256 of the config files a training stage runs, in order."""
    digest = hashlib.sha256()
    for name in configs:
        digest.update((bundle / "configs" / name).read_bytes())
    return digest.hexdigest()


def _train(work: Path, bundle: Path, settings: dict, saved: dict | None) -> dict:
    """
    Run the training stages (sliding window, global network, top-k) into ``work``, skipping the leading stages whose
    overrides and config files match ``saved`` (a previous ``training.json``); return ``settings`` with each
    stage's config digest and minutes.
    """
    record, reusing = {}, saved is not None
    for stage, configs in TRAINING_STAGES:
        digest = _config_digest(bundle, configs)
        reusing = (reusing and saved.get(stage) == settings[stage] and saved.get(f"configs_{stage}") == digest
                   and f"minutes_{stage}" in saved)
        if reusing:
            record.update({f"configs_{stage}": digest, f"minutes_{stage}": saved[f"minutes_{stage}"]})
            print(f"reusing the {stage} training in {work}", flush=True)
            continue
        t0 = time.time()
        # a stage retrained under reuse_training replaces its own earlier weights in this scratch folder
        run_bundle(bundle, configs, {**settings[stage], "overwrite": True}, log_file=work / f"{stage}.log")
        record.update({f"configs_{stage}": digest, f"minutes_{stage}": (time.time() - t0) / 60})
    return {**settings, **record}


def benchmark_inference(
    workdir: str | os.PathLike,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    ks: Sequence[int] = DEFAULT_KS,
    num_train: int = 8,
    num_test: int = 2,
    threads: int = 2,
    seed: int = 0,
    train_overrides: dict | None = None,
    topk_overrides: dict | None = None,
    invert_labels: bool = True,
    reuse_training: bool = False,
    global_overrides: dict | None = None,
    topk_inference_overrides: dict | None = None,
) -> list[dict]:
    """
    Train the BTCV bundle with sliding window (CPU demo settings and :data:`SW_BENCHMARK_OVERRIDES`), then the
    global network of its top-k model alone on whole shrunk volumes (:data:`GLOBAL_CPU_OVERRIDES`), then the top-k
    model with both networks frozen (:data:`TOPK_CPU_OVERRIDES`), on phantoms of ``shape`` voxels at ``spacing`` mm;
    then infer ``num_test`` held-out phantoms with sliding window and with top-k at each K of ``ks`` (0: the
    global network alone; -1: every candidate), each method in a fresh process, all with the same postprocessing
    (``invert_labels``: argmax on the network grid and nearest-neighbour inversion, else the bundle default of
    inverting probabilities).

    ``train_overrides``, ``global_overrides`` and ``topk_overrides`` change the three trainings (e.g. fewer
    iterations for a smoke run); the later stages inherit ``train_overrides``. ``topk_inference_overrides`` change
    the top-k inference runs only (e.g. ``topk_selection``). ``reuse_training`` keeps the
    phantoms in ``workdir`` and every training stage whose settings, and those of the stages before it, are
    unchanged (to re-time inference, or retrain only the top-k stages); it refuses phantoms made with other
    settings. Otherwise ``workdir`` is replaced.

    Returns one row per method: mean pipeline and network seconds, FLOPs of the network calls, peak RSS added by
    inference, mean Dice on the phantoms' own grid, patches refined, training minutes.
    """
    bad = [k for k in ks if int(k) < -1]
    if bad:
        raise ValueError(f"ks holds {bad}: each K must be >= 0 (0: the global network alone), or -1 for every "
                         f"candidate.")
    work = Path(workdir).resolve()
    bundle = work / SHIPPED_BUNDLES["btcv"].folder
    base = {**CPU_DEMO_OVERRIDES, **SW_BENCHMARK_OVERRIDES, "dataset_dir": str(work / "data"),
            **(train_overrides or {})}
    topk = {**base, **TOPK_CPU_OVERRIDES, "local_checkpoint": str(bundle / "models/model.pt"), **(topk_overrides or {})}
    glob = {**topk, **GLOBAL_CPU_OVERRIDES, **(global_overrides or {})}
    topk.update({"global_checkpoint": str(bundle / "models/model_global.pt"), "freeze_global": True})
    settings = {"shape": list(shape), "spacing": list(spacing), "num_train": num_train, "num_test": num_test,
                "seed": seed, "train": base, "train_global": glob, "train_topk": topk}
    record = work / "training.json"
    saved = None
    if reuse_training and record.is_file():
        saved = json.loads(record.read_text())
        differs = [k for k in DATA_SETTINGS if saved.get(k) != settings[k]]
        if differs:
            raise ValueError(f"{record} was trained on phantoms made with other settings ({', '.join(differs)}); "
                             f"run without reuse_training to start again, or pass the settings it records.")
        shutil.copytree(bundles_dir() / bundle.name / "configs", bundle / "configs", dirs_exist_ok=True)
    else:
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(bundles_dir() / bundle.name, bundle, ignore=shutil.ignore_patterns("models", "eval"))
        _write_phantoms(work, settings)
    settings = _train(work, bundle, settings, saved)
    atomic_write_bytes(record, (json.dumps(settings, indent=2) + "\n").encode())
    held_out = work / "held_out"
    cases = [(str(i), str(held_out / "RawData/Training/label" / i.name.replace("img", "label")))
             for i in sorted((held_out / "RawData/Training/img").glob("*.nii.gz"))]

    net = {k: base[k] for k in ("channels", "strides", "patch_size")}
    net["invert_labels"] = invert_labels
    net_topk = {**net, **{k: topk[k] for k in TOPK_NETWORK_IDS if k in topk}, **(topk_inference_overrides or {})}
    methods = [("sliding window", ["inference.json"], net, 0)]
    for k in ks:
        topk_k = ALL_CANDIDATES if k < 0 else k
        methods.append((f"top-k K={'all' if k < 0 else k}", ["inference.json", "inference_topk.json"],
                        {**net_topk, "topk_k": topk_k}, topk_k))
    rows = []
    for name, configs, overrides, k in methods:
        out = work / "outputs" / name.replace(" ", "_").replace("=", "")
        if out.exists():
            shutil.rmtree(out)
        spec = {"method": name, "bundle": str(bundle), "configs": configs, "overrides": overrides, "k": k,
                "output_dir": str(out), "cases": cases, "threads": threads, "in_channels": 1}
        res = _measure(spec)
        r = res["rows"]
        rows.append({
            "method": name,
            "patches": res["patches"],
            "windows": res["windows"],
            "pipeline_s": float(np.mean([x["pipeline_s"] for x in r])),
            "network_s": float(np.mean([x["network_s"] for x in r])),
            "gflops": res["flops"] / 1e9,
            "peak_mib": res["peak_mib"],
            "dice": float(np.nanmean([x["dice"] for x in r])),
            "volume": r[0]["shape"],
            "patch_size": list(base["patch_size"]),
            "train_minutes": {stage: settings[f"minutes_{stage}"] for stage, _ in TRAINING_STAGES},
        })
        print(f"{name}: {rows[-1]['pipeline_s']:.1f} s, Dice {rows[-1]['dice']:.3f}", flush=True)
    return rows


# the local network of both methods in the shipped-configuration timing: E2ENet as the bundles ship it, or the
# nnU-Net-like DynUNet (e2enet_monai.networks.nets.baselines), for the same 96 x 128 x 128 patches
LOCAL_NETWORKS = {
    "e2enet": None,
    "dynunet": {"_target_": "e2enet_monai.networks.nets.baselines.nnunet_like_dynunet", "in_channels": "@in_channels",
                "out_channels": "@num_classes", "deep_supervision": False},
}


def _shipped_bundle(work: Path, local: str) -> Path:
    """The BTCV bundle in its shipped configuration with ``local`` as the (sliding-window and top-k) local network
    and seeded random weights (time and memory do not depend on the weights)."""
    from e2enet_monai.benchmarks.segment_time import random_weights_bundle

    if LOCAL_NETWORKS[local] is None:
        return random_weights_bundle("btcv", work / local)
    source = bundles_dir() / SHIPPED_BUNDLES["btcv"].folder
    staged = work / f"configs_{local}" / source.name
    shutil.copytree(source, staged, ignore=shutil.ignore_patterns("models", "eval"))
    for name, key in (("inference.json", "network_def"), ("inference_topk.json", "local_network_def")):
        config = json.loads((staged / "configs" / name).read_text())
        config[key] = LOCAL_NETWORKS[local]
        (staged / "configs" / name).write_text(json.dumps(config, indent=4) + "\n")
    return random_weights_bundle("btcv", work / local, source=staged)


def benchmark_shipped_inference(
    workdir: str | os.PathLike,
    shape: Sequence[int] = (512, 512, 200),
    spacing: Sequence[float] = (0.8, 0.8, 2.5),
    ks: Sequence[int] = (0, 1, 5, 30),
    local_networks: Sequence[str] = tuple(LOCAL_NETWORKS),
    threads: int = 2,
    invert_labels: bool = False,
) -> list[dict]:
    """
    Time the BTCV bundle's inference in the configuration it ships (local network on 96 x 128 x 128 patches, the
    top-k model's global E2ENet on the volume shrunk 3x) on one phantom CT of ``shape`` voxels at ``spacing`` mm:
    sliding window and top-k at each K of ``ks``, for each local network of ``local_networks`` (see
    :data:`LOCAL_NETWORKS`), with seeded random weights. Each method runs in a fresh process with ``threads``
    threads: the whole pipeline (load, preprocess, infer, postprocess, write) with the bundles' own
    postprocessing (sliding window: probabilities inverted, or with ``invert_labels`` the argmax label map; top-k:
    its label map), the network calls alone, their FLOPs and the peak resident memory the process added.

    Returns one row per (local network, method), as :func:`benchmark_inference` (Dice is NaN: random weights).
    """
    unknown = [n for n in local_networks if n not in LOCAL_NETWORKS]
    if unknown:
        raise ValueError(f"local networks must be among {list(LOCAL_NETWORKS)}, got {unknown}.")
    work = Path(workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    raw = write_synthetic("btcv", work / "ct", num_train=0, num_test=1, shape=tuple(shape), spacing=tuple(spacing))
    cases = [(str(p), None) for p in sorted((raw / "RawData/Testing/img").glob("*.nii.gz"))]
    rows = []
    for local in local_networks:
        bundle = _shipped_bundle(work, local)
        patch = json.loads((bundle / "configs/inference.json").read_text())["patch_size"]
        methods = [("sliding window", ["inference.json"], {"invert_labels": invert_labels}, 0)]
        methods += [(f"top-k K={k}", ["inference.json", "inference_topk.json"], {"topk_k": k}, k) for k in ks]
        for name, configs, overrides, k in methods:
            out = work / "outputs" / local / name.replace(" ", "_").replace("=", "")
            spec = {"method": f"{local}: {name}", "bundle": str(bundle), "configs": configs, "overrides": overrides,
                    "k": k, "output_dir": str(out), "cases": cases, "threads": threads, "in_channels": 1}
            res = _measure(spec)
            r = res["rows"][0]
            rows.append({"local": local, "method": name, "patches": res["patches"], "windows": res["windows"],
                         "pipeline_s": r["pipeline_s"], "network_s": r["network_s"], "gflops": res["flops"] / 1e9,
                         "peak_mib": res["peak_mib"], "dice": float("nan"), "volume": r["shape"],
                         "patch_size": list(patch)})
            print(f"{local}, {name}: {r['pipeline_s']:.1f} s, {res['peak_mib']:.0f} MiB", flush=True)
    return rows


def write_shipped_report(rows: list[dict], out_dir: str | os.PathLike, header: str) -> tuple[Path, Path]:
    """Write ``benchmark_inference_shipped.md`` (table) and ``.json``: ratios within each local network."""
    cols = ["local network", "method", "network runs", "pipeline s", "speed-up", "network s", "GFLOPs",
            "FLOPs vs SW", "peak MiB", "memory vs SW"]
    cells = []
    for r in rows:
        sw = next(x for x in rows if x["local"] == r["local"] and x["method"] == "sliding window")
        runs = f"{r['windows']} windows" if r["method"] == "sliding window" else f"global + {r['patches']}"
        cells.append([r["local"], r["method"], runs, f"{r['pipeline_s']:.1f}",
                      f"{sw['pipeline_s'] / r['pipeline_s']:.1f}x", f"{r['network_s']:.1f}", f"{r['gflops']:.0f}",
                      f"{r['gflops'] / sw['gflops']:.1%}", f"{r['peak_mib']:.0f}",
                      f"{r['peak_mib'] / sw['peak_mib']:.2f}x"])
    return write_report(out_dir, "benchmark_inference_shipped", header, cols, cells, rows, align_right=True)


def command_line(invert_labels: bool = True, reuse_training: bool = False, train_overrides: dict | None = None,
                 topk_overrides: dict | None = None, global_overrides: dict | None = None,
                 shape: Sequence[int] = DEFAULT_SHAPE, ks: Sequence[int] = DEFAULT_KS,
                 spacing: Sequence[float] = DEFAULT_SPACING, topk_inference_overrides: dict | None = None) -> str:
    """The ``tools/benchmark_inference.py`` command (shell syntax) naming the flags that differ from the defaults;
    overrides are written as Python literals, which is how ``fire`` reads them back."""
    flags = [(f"--shape {','.join(str(n) for n in shape)}", tuple(shape) != DEFAULT_SHAPE),
             (f"--spacing {','.join(str(v) for v in spacing)}", tuple(spacing) != DEFAULT_SPACING),
             (f"--ks=\"{','.join(str(k) for k in ks)}\"", tuple(ks) != DEFAULT_KS),
             ("--invert_labels False", not invert_labels), ("--reuse_training True", reuse_training),
             (f'--train_overrides "{train_overrides!r}"', train_overrides),
             (f'--global_overrides "{global_overrides!r}"', global_overrides),
             (f'--topk_overrides "{topk_overrides!r}"', topk_overrides),
             (f'--topk_inference_overrides "{topk_inference_overrides!r}"', topk_inference_overrides)]
    return " ".join(["python tools/benchmark_inference.py"] + [f for f, on in flags if on])


def write_inference_report(rows: list[dict], out_dir: str | os.PathLike, header: str) -> tuple[Path, ...]:
    """Write ``benchmark_inference.md`` (table), ``.json`` and, with matplotlib, ``.png`` (Dice and time vs K)."""
    sw = rows[0]
    cols = ["method", "patches", "pipeline s", "speed-up", "network s", "GFLOPs", "FLOPs vs SW", "peak MiB",
            "mean Dice"]
    cells = [[r["method"], str(r["patches"]), f"{r['pipeline_s']:.1f}", f"{sw['pipeline_s'] / r['pipeline_s']:.1f}x",
              f"{r['network_s']:.1f}", f"{r['gflops']:.0f}", f"{r['gflops'] / sw['gflops']:.1%}",
              f"{r['peak_mib']:.0f}", f"{r['dice']:.3f}"] for r in rows]
    md, js = write_report(out_dir, "benchmark_inference", header, cols, cells, rows, align_right=True)
    out = Path(out_dir)
    written = [md, js]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return tuple(written)
    topk = rows[1:]
    xs = [r["patches"] for r in topk]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(xs, [r["dice"] for r in topk], "o-", label="top-k")
    ax1.axhline(sw["dice"], color="k", ls="--", label="sliding window")
    ax1.set(xlabel="K (patches refined; 0: global network only)", ylabel="mean Dice", title="accuracy")
    ax1.set_xscale("symlog", linthresh=1)
    ax2.plot(xs, [r["pipeline_s"] for r in topk], "o-", color="C0", label="top-k, whole pipeline")
    ax2.axhline(sw["pipeline_s"], color="C0", ls="--", label="sliding window, whole pipeline")
    ax2.plot(xs, [r["network_s"] for r in topk], "s-", color="C1", label="top-k, networks only")
    ax2.axhline(sw["network_s"], color="C1", ls="--", label="sliding window, network only")
    ax2.set(yscale="log", xlabel="K (patches refined)", ylabel="seconds per volume", title="CPU time")
    ax2.set_xscale("symlog", linthresh=1)
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = out / "benchmark_inference.png"
    fig.savefig(png, dpi=100)
    written.append(png)
    return tuple(written)
