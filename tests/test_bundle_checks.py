"""Model Zoo checks on the bundle folders (no weights needed): our verify tool on every bundle, each metadata schema
on its own, the zoo CI's own checks as it runs them, and the configs' shared wiring."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2enet_monai.release.verify import OUR_SCHEMA, check_metadata

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (ROOT / "bundles").iterdir() if p.is_dir())
OFFICIAL = ROOT.parent / "shared" / "schemas"
SCHEMAS = [OUR_SCHEMA, OFFICIAL / "meta_schema_20220324.json", OFFICIAL / "meta_schema_20240725.json"]


def test_three_bundles():
    assert [b.name for b in BUNDLES] == ["e2enet_amos_ct_segmentation", "e2enet_brats_segmentation",
                                         "e2enet_btcv_segmentation"]


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda p: p.name)
def test_metadata_schema(bundle, schema):
    if not schema.is_file():
        pytest.skip(f"official schema {schema} is provided beside the checkout in CI only")
    check_metadata(bundle, schema)


def test_our_schema_rejects_incomplete_metadata(tmp_path):
    bundle = tmp_path / "b"
    (bundle / "configs").mkdir(parents=True)
    meta = json.loads((BUNDLES[0] / "configs/metadata.json").read_text())
    del meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    (bundle / "configs/metadata.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="channel_def"):
        check_metadata(bundle, OUR_SCHEMA)


def test_bundles_differ_only_in_data_specific_values():
    """Shared logic lives in the library: the three train configs have the same ids and wiring."""
    configs = [json.loads((b / "configs/train.json").read_text()) for b in BUNDLES]
    # CT window and organ oversampling vs BraTS label convention (BraTS crops uniformly)
    data_ids = {"intensity_range", "pos_fraction", "label_convention"}
    assert all(set(c) ^ set(configs[0]) <= data_ids for c in configs)
    assert len({json.dumps(c["train"]["handlers"]) for c in configs}) == 1
    assert len({json.dumps(c["validate"]["handlers"]) for c in configs}) == 1
    for name in ("inference_topk.json", "train_topk.json"):  # same ids; values differ in channels and loss only
        assert len({json.dumps(sorted(json.loads((b / "configs" / name).read_text()))) for b in BUNDLES}) == 1, name
    for name in ("train_global.json", "evaluate.json", "multi_gpu_train.json", "multi_gpu_evaluate.json",
                 "logging.conf"):
        assert len({(b / "configs" / name).read_text() for b in BUNDLES}) == 1, name


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_topk_fusion_id_chooses_the_fusion_in_training_and_inference(bundle):
    """``topk_fusion`` reaches NMSWNet in both top-k configs: the class-wise gate by default, else the conv fusion."""
    from monai.bundle import ConfigParser

    from e2enet_monai.networks.blocks import ClassGate, ConvFusion

    small = {"channels": [8, 16, 32, 64], "strides": [1, 2, 2, 2], "global_channels": [8, 16, 32, 64],
             "global_strides": [1, 2, 2, 2]}
    for configs in (["train.json", "train_topk.json"], ["inference.json", "inference_topk.json"]):
        for fusion, expected in ((None, ClassGate), ("conv", ConvFusion)):
            parser = ConfigParser()
            parser.read_config([str(bundle / "configs" / name) for name in configs])
            parser.update({**small, **({"topk_fusion": fusion} if fusion else {})})
            assert type(parser.get_parsed_content("network_def").fusion) is expected, (configs, fusion)


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_topk_selection_id_reaches_the_inferer(bundle):
    """``topk_selection`` reaches TopKPatchInferer in inference and in the top-k model's validation (so evaluate.json
    measures what inference does): the coarse uncertainty by default, else the score head; a value it does not
    know is refused when the inferer is built."""
    from monai.bundle import ConfigParser

    for configs, key in ((["inference.json", "inference_topk.json"], "inferer"),
                         (["train.json", "train_topk.json"], "validate#inferer")):
        for selection, expected in ((None, "uncertainty"), ("learned", "learned"), ("oracle", None)):
            parser = ConfigParser()
            parser.read_config([str(bundle / "configs" / name) for name in configs])
            parser.update({"topk_selection": selection} if selection else {})
            if expected is None:
                with pytest.raises(RuntimeError) as info:  # MONAI's "failed to instantiate", from our ValueError
                    parser.get_parsed_content(key)
                assert "selection one of ('learned', 'uncertainty')" in str(info.value.__cause__)
            else:
                assert parser.get_parsed_content(key).selection == expected, (configs, selection)


def test_verify_tool_runs_every_check_on_every_bundle(tmp_path):
    """``python tools/verify_bundles.py`` as the README gives it (every shipped bundle; MONAI's official schemas added
    where they are beside the checkout): every check passes on every bundle, exit status 0. The checks leave nothing
    behind: no file added to or removed from a bundle (the training configs' TensorBoard writers go to a scratch
    folder), no scratch folder (phantoms, the TorchScript export of 190 MB for the paper network) left in TMPDIR.
    Standard output is the report alone."""
    schemas = [str(s) for s in SCHEMAS[1:] if s.is_file()]
    before = {b: sorted(p.relative_to(b) for p in b.rglob("*")) for b in BUNDLES}
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    cmd = [sys.executable, str(ROOT / "tools/verify_bundles.py")] + (["--schema", ",".join(schemas)] if schemas else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "TMPDIR": str(scratch)})
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    expected = ["layout", "changelog", "metadata (metadata_schema.json)",
                *(f"metadata ({Path(s).name})" for s in schemas), "net_in_out", "export", "properties"]
    blocks = out.stdout.split("== ")[1:]
    assert [Path(block.splitlines()[0]).resolve() for block in blocks] == BUNDLES
    for block in blocks:
        # one result line per check and nothing else: MONAI's log lines went to standard error
        rows = [line.split() for line in block.splitlines()[1:]]
        assert [(" ".join(row[:-1]), row[-1]) for row in rows] == [(check, "ok") for check in expected], block
    assert {b: sorted(p.relative_to(b) for p in b.rglob("*")) for b in BUNDLES} == before
    assert not [p.name for p in scratch.iterdir() if p.name.startswith(("ckpt_export_", "props_"))]


def test_export_check_catches_an_export_off_by_less_than_float32_rounding(monkeypatch):
    """The export check compares in float64 (float32 rounding differs between the scripted plain-op graph and eager's
    fast path by up to ~3e-5 of the output's scale, so a float32 tolerance either fails at random or lets small errors
    through): a scripted network whose output is off by 1e-6, well inside any float32 tolerance, is reported with the
    size of the difference."""
    import torch

    from e2enet_monai.release.verify import check_export

    load = torch.jit.load

    class OffByAMillionth(torch.nn.Module):
        def __init__(self, scripted: torch.nn.Module):
            super().__init__()
            self.scripted = scripted

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.scripted(x) + 1e-6

    monkeypatch.setattr(torch.jit, "load", lambda path: OffByAMillionth(load(path)))
    shape = r"\(1, 16, 32, 32, 64\)"
    with pytest.raises(AssertionError, match=rf"does not reproduce the network's output in float64: output shape "
                                             rf"{shape} vs {shape}, largest difference 1e-06"):
        check_export(ROOT / "bundles/e2enet_amos_ct_segmentation")


TINY = {"num_workers": 0, "channels": [8, 16, 32, 64], "strides": [1, 2, 2, 2], "patch_size": [16, 32, 32],
        "epoch_length": 2, "sparse_update_frequency": 1}


@pytest.fixture(scope="module")
def tiny_btcv(tiny_btcv_factory):
    return tiny_btcv_factory((32, 32, 16))


def _train(data, out, **overrides):
    from monai.bundle import ConfigWorkflow

    bundle = ROOT / "bundles/e2enet_btcv_segmentation"
    wf = ConfigWorkflow(config_file=str(bundle / "configs/train.json"), workflow_type="train", bundle_root=str(bundle),
                        dataset_dir=str(data), output_dir=str(out), ckpt_dir=str(out / "models"),
                        **{**TINY, **overrides})
    wf.initialize()
    wf.run()
    trainer, sparse = wf.parser.get_parsed_content("train#trainer"), wf.parser.get_parsed_content("train#sparse")
    wf.finalize()
    return trainer, sparse


def test_resume_continues_trainer_schedule_and_masks(tiny_btcv, tmp_path):
    import torch

    out = tmp_path / "out"
    _, first = _train(tiny_btcv, out, epochs=1, save_last=True)
    last = sorted((out / "models").glob("last_checkpoint_*.pt"))
    assert len(last) == 1
    saved = torch.load(last[0], map_location="cpu", weights_only=False)
    assert saved["sparse"]["iteration"] == 2 and saved["trainer"]["iteration"] == 2
    trainer, resumed = _train(tiny_btcv, tmp_path / "resumed", epochs=2, resume_from=str(last[0]))
    assert trainer.state.epoch == 2 and trainer.state.iteration == 4
    assert resumed.sparsity.iteration == 4  # continued from 2, not restarted
    assert resumed.sparsity.total_iterations == 4


def test_train_logs_sparse_updates_to_tensorboard(tiny_btcv, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    _train(tiny_btcv, out, epochs=1)
    tags = set()
    for events in out.glob("events*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train_loss", "sparse/death_rate", "sparse/pruned_kernels", "sparse/density/mesh.0.0.up.weight"} <= tags


def test_lowercase_boolean_override_is_rejected_with_the_fix():
    from e2enet_monai.bundle import check_cli_overrides

    cfg = str(ROOT / "bundles/e2enet_btcv_segmentation/configs/train.json")
    argv = ["/x/monai/bundle/__main__.py", "run", "--config_file", cfg, "--sparse_training", "false", "--fold", "1"]
    with pytest.raises(ValueError, match="--sparse_training false -> --sparse_training False"):
        check_cli_overrides(argv)
    check_cli_overrides([*argv[:5], "False", "--fold", "1"])  # the capitalised literal is a bool: accepted


def test_runner_passes_booleans_as_python_literals():
    from e2enet_monai.apps.runner import bundle_command

    cmd = bundle_command(ROOT / "bundles/e2enet_btcv_segmentation", ["train.json"],
                         {"sparse_training": False, "channels": [8, 16], "overwrite": True})
    assert cmd[cmd.index("--sparse_training") + 1] == "False" and cmd[cmd.index("--overwrite") + 1] == "True"
    assert cmd[cmd.index("--channels") + 1] == "[8, 16]"


def test_runner_log_file_is_written_and_named_on_failure(tmp_path):
    from e2enet_monai.apps.runner import run_bundle

    log = tmp_path / "train.log"
    with pytest.raises(RuntimeError) as err:  # an unknown override key fails before anything is built
        run_bundle(ROOT / "bundles/e2enet_btcv_segmentation", ["train.json"], {"epoch": 2}, log_file=log)
    text = log.read_text()
    assert text.startswith(sys.executable) and "--epoch 2" in text.splitlines()[0]
    assert "epoch" in text.split("\n", 1)[1]  # the bundle's own error, streamed to the file
    assert f"(full log: {log})" in str(err.value) and text.splitlines()[-1] in str(err.value)


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_model_zoo_ci_checks_pass_as_the_zoo_runs_them(bundle, tmp_path, monkeypatch):
    """Our copy of the zoo's verify_bundle.py: default n, no data, fake weights, from another working folder, against
    the schema the bundle's metadata names (the zoo downloads it; here the official file beside the checkout). The
    other official schema is checked on its own above."""
    import shutil

    import zoo_ci

    schema = OFFICIAL / json.loads((bundle / "configs/metadata.json").read_text())["schema"].rsplit("/", 1)[-1]
    if not schema.is_file():
        pytest.skip(f"official schema {schema} is provided beside the checkout in CI only")
    copy = tmp_path / bundle.name
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("models", "eval"))
    zoo_ci.produce_fake_weights(copy)
    monkeypatch.chdir(tmp_path)
    assert zoo_ci.verify(copy, schema) == ["directory", "version", "metadata", "properties", "data shape",
                                           "torchscript"]
    assert (copy / "models/verify_model.ts").is_file()
