"""Mirror TTA and fold ensembles (EnsembleInferer, load_ensemble, the bundles' tta/folds ids, train.json --fold)."""

import copy
import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn
import warm
from bundle_copies import btcv_case as make_btcv_case
from docs_commands import docs_command
from monai.bundle import ConfigParser
from monai.inferers import SimpleInferer, SlidingWindowInferer
from test_topk import make_model

from e2enet_monai.bundle import load_ensemble
from e2enet_monai.bundle.registry import bundle_path
from e2enet_monai.data import write_synthetic
from e2enet_monai.inferers import EnsembleInferer, TopKPatchInferer, mirror_flips
from e2enet_monai.utils.errors import InputError


def conv_net(kernel=3, seed=0, channels=3):
    torch.manual_seed(seed)
    return nn.Conv3d(2, channels, kernel, padding=kernel // 2).double().eval()


def test_mirror_flips_are_every_subset_once():
    assert mirror_flips([0, 1, 2]) == [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    assert mirror_flips([]) == [()]


def test_tta_of_a_flip_equivariant_network_equals_no_tta():
    """A pointwise network commutes with every flip: 8-flip TTA through a sliding window gives its probabilities."""
    net = conv_net(kernel=1)
    x = torch.randn(1, 2, 20, 17, 23, dtype=torch.float64)
    sw = SlidingWindowInferer((8, 8, 8), overlap=0.5, mode="gaussian")
    plain = torch.softmax(sw(x, net), 1)
    tta = EnsembleInferer(sw, mirror_axes=(0, 1, 2))(x, net)
    assert tta.dtype == torch.float32
    assert torch.allclose(torch.softmax(tta, 1).double(), plain, atol=1e-6)


def test_tta_is_the_mean_of_the_flipped_back_probabilities():
    """A 3x3x3 conv is not flip-equivariant: TTA equals the average written out by hand, for softmax and sigmoid."""
    net = conv_net(kernel=3)
    x = torch.randn(2, 2, 9, 8, 7, dtype=torch.float64)
    flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    for activation, act in (("softmax", lambda t: torch.softmax(t, 1)), ("sigmoid", torch.sigmoid)):
        expected = sum(torch.flip(act(net(torch.flip(x, d))), d) if d else act(net(x)) for d in flips) / 8
        out = EnsembleInferer(SimpleInferer(), (0, 1, 2), activation=activation)(x, net)
        assert torch.allclose(act(out.double()), expected, atol=1e-6), activation
        assert not torch.allclose(act(net(x)), expected, atol=1e-3)  # the flips did change something
    one_axis = EnsembleInferer(SimpleInferer(), (1,))(x, net)
    expected = (torch.softmax(net(x), 1) + torch.flip(torch.softmax(net(torch.flip(x, (3,))), 1), (3,))) / 2
    assert torch.allclose(torch.softmax(one_axis.double(), 1), expected, atol=1e-6)


def test_ensemble_of_identical_checkpoints_equals_one_and_of_different_ones_their_mean():
    net, other = conv_net(seed=0), conv_net(seed=1)
    x = torch.randn(1, 2, 8, 8, 8, dtype=torch.float64)
    same = EnsembleInferer(SimpleInferer(), networks=[net, copy.deepcopy(net), copy.deepcopy(net)])(x, None)
    assert torch.allclose(torch.softmax(same.double(), 1), torch.softmax(net(x), 1), atol=1e-6)
    mixed = EnsembleInferer(SimpleInferer(), networks=[net, other])(x, None)
    assert torch.allclose(torch.softmax(mixed.double(), 1),
                          (torch.softmax(net(x), 1) + torch.softmax(other(x), 1)) / 2, atol=1e-6)


def test_no_tta_and_one_network_returns_the_inner_output_unchanged():
    net = conv_net()
    x = torch.randn(1, 2, 8, 8, 8, dtype=torch.float64)
    assert torch.equal(EnsembleInferer(SimpleInferer())(x, net), net(x))


def test_top_k_inference_under_tta_and_an_ensemble():
    """Top-k inference is not flip-equivariant (the chosen patches move): TTA equals the hand-written average of
    its flipped runs, and an ensemble of two identical NMSW models equals one."""
    model = make_model(k=2).eval()
    x = torch.randn(1, 1, 40, 36, 32)
    topk = TopKPatchInferer(k=2, patch_batch_size=2)
    with torch.no_grad():
        single = torch.softmax(topk(x, model), 1)
        flips = mirror_flips((0, 1, 2))
        expected = sum(torch.flip(torch.softmax(topk(torch.flip(x, d), model), 1), d) if d else single
                       for d in flips) / len(flips)
        tta = EnsembleInferer(topk, (0, 1, 2))(x, model)
        pair = EnsembleInferer(topk, networks=[model, copy.deepcopy(model)])(x, model)
    assert torch.allclose(torch.softmax(tta, 1), expected, atol=1e-5)
    assert torch.allclose(torch.softmax(pair, 1), single, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"mirror_axes": (0, 0)}, "distinct spatial axes"), ({"mirror_axes": (3,)}, "distinct spatial axes"),
    ({"networks": []}, "networks is empty"), ({"activation": "relu"}, "activation must be one of")])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EnsembleInferer(SimpleInferer(), **kwargs)


def test_load_ensemble_checks_each_fold_before_loading(tmp_path):
    net = conv_net()
    torch.save({"model": net.state_dict()}, tmp_path / "model_fold0.pt")
    torch.save({"model": conv_net(seed=1).state_dict()}, tmp_path / "model_fold2.pt")
    members = load_ensemble(net, tmp_path, "model_fold{}.pt", [0, 2])
    assert [m.training for m in members] == [False, False] and members[0] is not net
    assert torch.equal(members[1].weight, conv_net(seed=1).weight)
    assert load_ensemble(net, tmp_path, "model_fold{}.pt", []) is None
    with pytest.raises(InputError, match=r"weights .*model_fold1.pt not found. Make it with: train fold 1"):
        load_ensemble(net, tmp_path, "model_fold{}.pt", [0, 1], how_to_make="train fold 1")
    with pytest.raises(InputError, match="repeats a fold"):
        load_ensemble(net, tmp_path, "model_fold{}.pt", [0, 0])
    torch.save({"model": conv_net(channels=4).state_dict()}, tmp_path / "model_fold3.pt")
    with pytest.raises(InputError, match="model_fold3.pt do not fit the network"):
        load_ensemble(net, tmp_path, "model_fold{}.pt", [0, 3])


@pytest.mark.parametrize("name", ["btcv", "amos", "brats"])
def test_train_json_fold_k_writes_model_fold_k_and_trains_on_that_split(name, tmp_path):
    """Without --fold, train.json trains fold 0's split into models/model.pt (as before); --fold k trains split k
    into models/model_fold<k>.pt, the top-k and global trainings likewise; the bundle's MONAI parser resolves it."""
    configs = bundle_path(name) / "configs"
    data = {"training": [{"image": f"i{i}.nii.gz", "label": f"l{i}.nii.gz", "fold": i % 5} for i in range(10)]}
    (tmp_path / "datalist.json").write_text(json.dumps(data))
    for extra, model in (([], "model"), (["train_topk.json"], "model_topk"), (["train_global.json"], "model_global")):
        for fold, expected in ((None, f"{model}.pt"), (2, f"{model}_fold2.pt")):
            parser = ConfigParser()
            parser.read_config([str(configs / "train.json"), *(str(configs / e) for e in extra)])
            parser["dataset_dir"] = str(tmp_path)
            if fold is not None:
                parser["fold"] = fold
            assert parser.get_parsed_content("best_model") == expected
            val = parser.get_parsed_content("val_datalist")
            assert sorted(Path(e["image"]).name for e in val) == (["i2.nii.gz", "i7.nii.gz"] if fold == 2 else
                                                                  ["i0.nii.gz", "i5.nii.gz"])


@pytest.fixture(scope="module")
def btcv_case(tmp_path_factory):
    return make_btcv_case(tmp_path_factory.mktemp("ens"))


def _labels(out, image):
    case = image.name[: -len(".nii.gz")]
    return np.asarray(nib.load(str(out / case / f"{case}_seg.nii.gz")).dataobj)


def test_segment_folds_of_identical_checkpoints_give_the_single_model_labels(btcv_case, tmp_path):
    """--folds runs the bundle's fold ensemble (models/model_fold<k>.pt); copies of one checkpoint give exactly its
    labels; the documented bundle command with folds and TTA gives the command's labels. A missing fold is named
    before any work."""
    bundle, image = btcv_case
    for k in (0, 1):
        shutil.copy(bundle / "models/model.pt", bundle / f"models/model_fold{k}.pt")
    single = warm.run_segment("-i", image, "-o", tmp_path / "single", "--bundle", bundle)
    folds = warm.run_segment("-i", image, "-o", tmp_path / "folds", "--bundle", bundle, "--folds", 0, 1)
    assert single.returncode == 0 and folds.returncode == 0, folds.stderr[-2000:]
    assert np.array_equal(_labels(tmp_path / "single", image), _labels(tmp_path / "folds", image))
    # the bundle docs' command, as written (five folds and TTA), and the segment command with the same options:
    # one pipeline, the same labels; on a small phantom of two windows (80 network passes per command)
    for k in (2, 3, 4):
        shutil.copy(bundle / "models/model.pt", bundle / f"models/model_fold{k}.pt")
    raw = write_synthetic("btcv", tmp_path / "small", num_train=0, num_test=1, shape=(80, 80, 36))
    image = sorted((raw / "RawData/Testing/img").glob("*.nii.gz"))[0]
    line = docs_command(bundle, "configs/inference.json", ["folds", "tta"], **{
        "\"['/path/a.nii.gz']\"": f"\"['{image}']\"", "--output_dir out": f"--output_dir {tmp_path / 'bundle_out'}"})
    assert '--folds "[0,1,2,3,4]" --tta True' in line
    bundle_cmd = subprocess.run(line, shell=True, cwd=bundle, capture_output=True, text=True, timeout=600)
    assert bundle_cmd.returncode == 0, bundle_cmd.stderr[-2000:]
    both = warm.run_segment("-i", image, "-o", tmp_path / "both", "--bundle", bundle, "--folds", 0, 1, 2, 3, 4, "--tta")
    assert both.returncode == 0, both.stderr[-2000:]
    labels = _labels(tmp_path / "bundle_out", image)
    assert len(np.unique(labels)) > 1 and np.array_equal(labels, _labels(tmp_path / "both", image))
    for k in (2, 3, 4):
        (bundle / f"models/model_fold{k}.pt").unlink()
    missing = warm.run_segment("-i", image, "-o", tmp_path / "missing", "--bundle", bundle, "--folds", 0, 4)
    assert missing.returncode == 1 and not (tmp_path / "missing").exists()
    assert missing.stderr.strip().splitlines()[-1] == (
        f"error: {bundle} has no sliding-window weights models/model_fold4.pt for --folds; train each fold with "
        f"train.json --fold <k> (the bundle's docs/README.md).")


def test_segment_tta_with_sliding_window_and_fast(btcv_case, tmp_path):
    """--tta reaches the bundle's tta id in both inference configs: a random-weight E2ENet is not flip-equivariant,
    so the averaged labels differ from the plain ones, on the same grid and with the same label set."""
    bundle, image = btcv_case
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs/inference.json"), str(bundle / "configs/inference_topk.json")])
    torch.manual_seed(1)
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, bundle / "models/model_topk.pt")
    for flags in ([], ["--fast"]):
        runs = {}
        for name, extra in (("plain", []), ("tta", ["--tta"])):
            out = tmp_path / (name + "".join(flags))
            proc = warm.run_segment("-i", image, "-o", out, "--bundle", bundle, *extra, *flags)
            assert proc.returncode == 0, proc.stderr[-2000:]
            runs[name] = _labels(out, image)
        assert runs["tta"].shape == runs["plain"].shape == tuple(nib.load(str(image)).shape), flags
        assert set(np.unique(runs["tta"])) <= set(range(14))
        assert (runs["tta"] != runs["plain"]).any(), flags
