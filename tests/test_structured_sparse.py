"""Channel-structured dynamic sparsity and the compaction of a trained mesh into smaller dense convolutions."""

import math

import pytest
import torch
from test_sparse import batch, small_net, train_steps

from e2enet_monai.networks import E2ENet
from e2enet_monai.sparse import (
    DynamicSparsity,
    KernelMasks,
    compact_model,
    input_channel_axis,
    kept_channels,
    kernel_densities,
    load_compact_checkpoint,
    save_compact_checkpoint,
)


def assert_whole_input_channels(net, masks, density, distribution="uniform", multiple=1):
    """Every mask is a set of whole input channels (columns of a conv, rows of a transposed conv), as many as the
    tensor's density under ``distribution`` asks, rounded to ``multiple``."""
    params = dict(net.named_parameters())
    densities = kernel_densities({n: tuple(params[n].shape) for n in masks.masks}, density, distribution)
    for name, mask in masks.masks.items():
        axis = input_channel_axis(net, name)
        units = mask.any(dim=1 - axis)
        assert torch.equal(mask, units.view((1, -1) if axis == 1 else (-1, 1)).expand_as(mask)), name
        assert int(units.sum()) == kept_channels(densities[name], mask.shape[axis], multiple), name


def test_transposed_conv_weights_count_their_first_axis_as_input():
    net = small_net()
    assert input_channel_axis(net, "mesh.0.0.up.weight") == 0
    assert input_channel_axis(net, "mesh.0.0.fuse.0.conv.conv.weight") == 1


@pytest.mark.parametrize("growth", ["random", "gradient"])
def test_channel_structure_survives_training_and_mask_updates(growth):
    net = small_net()
    sp = DynamicSparsity(net, 0.3, growth=growth, update_frequency=2, total_iterations=8, structure="channel",
                         mask_gradients=growth == "gradient")
    assert_whole_input_channels(net, sp.masks, 0.3)
    before = {n: m.clone() for n, m in sp.masks.masks.items()}
    train_steps(net, sp, torch.optim.AdamW(net.parameters(), lr=1e-2), 6)
    assert_whole_input_channels(net, sp.masks, 0.3)
    assert any(not torch.equal(before[n], m) for n, m in sp.masks.masks.items())  # channels were swapped
    params = dict(net.named_parameters())
    for name, mask in sp.masks.masks.items():
        assert not (params[name].detach().flatten(2).ne(0).any(dim=2) & ~mask).any(), name


def test_kept_channels_rounds_to_the_multiple():
    # the paper network's mesh at density 0.2: level-0 fusion convs read 96 channels, level-3 ones 832
    assert [kept_channels(0.2, c) for c in (96, 48, 832)] == [19, 10, 166]
    assert [kept_channels(0.2, c, 16) for c in (96, 48, 832)] == [16, 16, 160]
    assert [kept_channels(0.2, c, 8) for c in (96, 48, 832, 40, 6)] == [16, 8, 168, 8, 6]  # never more than all
    with pytest.raises(ValueError, match="channel multiple must be >= 1, got 0"):
        kept_channels(0.2, 96, 0)


def test_channel_multiple_survives_training_and_compacts_to_multiples():
    net = E2ENet(3, 1, 3, channels=(16, 32, 64), strides=(1, 2, 2), deep_supervision=False)
    sp = DynamicSparsity(net, 0.2, update_frequency=2, total_iterations=8, structure="channel", channel_multiple=8)
    assert_whole_input_channels(net, sp.masks, 0.2, multiple=8)
    before = {n: m.clone() for n, m in sp.masks.masks.items()}
    train_steps(net, sp, torch.optim.AdamW(net.parameters(), lr=1e-2), 6)
    assert any(not torch.equal(before[n], m) for n, m in sp.masks.masks.items())  # channels were swapped
    assert_whole_input_channels(net, sp.masks, 0.2, multiple=8)  # and every tensor kept its count
    net.eval()
    x, _ = batch(3)
    with torch.no_grad():
        expected = net(x)
    keep = compact_model(net, sp.masks)
    assert keep and all(len(channels) % 8 == 0 for channels in keep.values())
    with torch.no_grad():
        assert torch.allclose(net(x), expected, rtol=1e-5, atol=1e-5)
    refusal = "channel_multiple must be 1 with kernel masks .* got 8 with structure 'kernel'"
    with pytest.raises(ValueError, match=refusal):
        DynamicSparsity(small_net(), 0.2, channel_multiple=8)  # kernel masks have no channel count


def test_channel_update_prunes_the_weakest_input_channels():
    net = small_net()
    sp = DynamicSparsity(net, 0.5, update_frequency=1, total_iterations=10, structure="channel", death_rate=0.3)
    name = "mesh.0.0.fuse.0.conv.conv.weight"
    weight = dict(net.named_parameters())[name]
    active = sp.masks.masks[name].any(dim=0).nonzero().flatten().tolist()
    with torch.no_grad():  # make the first active channel clearly the weakest
        weight[:, active] = 1.0
        weight[:, active[0]] = 1e-3
    sp.update()
    assert not sp.masks.masks[name][:, active[0]].any()


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.45])
def test_channel_updates_swap_the_nearest_count_so_a_decayed_rate_swaps_none(rate):
    """Kernel masks round the count up (the paper's); channel masks keep few units (8 or 16 here), so they round to the
    nearest: at a death rate of 0.05 no channel is swapped, where rounding up would swap one of the 8."""
    net = small_net()
    sp = DynamicSparsity(net, 0.5, update_frequency=1, total_iterations=10, structure="channel", channel_multiple=8,
                         death_rate=rate, final_death_rate=rate)
    before = {name: sp._units(name, mask) for name, mask in sp.masks.masks.items()}
    sp.update()
    swapped = {name: int((before[name] & ~sp._units(name, mask)).sum()) for name, mask in sp.masks.masks.items()}
    # a tensor that keeps all its inputs has none to regrow, so the pruned ones come back
    expected = {name: 0 if bool(units.all()) else math.floor(rate * int(units.sum()) + 0.5)
                for name, units in before.items()}
    assert swapped == expected
    eights = [name for name, units in before.items() if int(units.sum()) == 8 and not bool(units.all())]
    assert eights and {swapped[name] for name in eights} == {math.floor(rate * 8 + 0.5)}  # 0, 2, 4 of 8
    kernel = DynamicSparsity(small_net(), 0.5, update_frequency=1, total_iterations=10, death_rate=0.05,
                             final_death_rate=0.05)
    assert kernel.update()["pruned"] == sum(math.ceil(0.05 * int(m.sum())) for m in kernel.masks.masks.values())


def test_resume_refuses_another_structure():
    net = small_net()
    state = DynamicSparsity(net, 0.3, structure="channel").state_dict()
    with pytest.raises(ValueError, match="structure 'channel', this run uses 'kernel'"):
        DynamicSparsity(small_net(), 0.3).load_state_dict(state)
    with pytest.raises(ValueError, match="structure must be one of"):
        DynamicSparsity(net, 0.3, structure="filter")


@pytest.mark.parametrize("channels, strides", [((8, 16, 32), (1, 2, 2)), ((7, 13, 21, 10), (1, (1, 2, 2), 2, 2))])
def test_compacted_mesh_gives_the_masked_output_with_fewer_weights(channels, strides):
    torch.manual_seed(0)
    net = E2ENet(3, 2, 4, channels=channels, strides=strides).eval()
    masks = KernelMasks.random(net, 0.25, parameters=None, seed=1, structure="channel")
    masks.apply(net)
    x = torch.randn(1, 2, 8, 16, 16)
    with torch.no_grad():
        expected = net(x)
    keep = compact_model(net, masks)
    fuse_blocks = [n for n, _ in net.named_modules() if ".fuse." in n and n.count(".") == 4]
    assert sorted(keep) == sorted(fuse_blocks)  # every fusion block lost input channels
    with torch.no_grad():
        assert torch.allclose(net(x), expected, rtol=1e-5, atol=1e-5)
    params = dict(net.named_parameters())
    for block, channels in keep.items():  # each fusion conv holds exactly its active kernels now
        mask = masks.masks[f"{block}.conv.conv.weight"]
        weight = params[f"{block}.conv.conv.weight"]
        assert weight.shape[1] == len(channels) == int(mask.any(dim=0).sum()) < mask.shape[1]
        assert weight[:, :, 0, 0, 0].numel() == int(mask.sum())
    net.train()  # and it still trains: deep supervision outputs, gradients
    sum(o.mean() for o in net(x)).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(net.eval())(x), expected, rtol=1e-5, atol=1e-5)


def test_compact_checkpoint_round_trip(tmp_path):
    net = small_net().eval()
    sp = DynamicSparsity(net, 0.3, update_frequency=2, total_iterations=6, structure="channel")
    train_steps(net, sp, torch.optim.SGD(net.parameters(), lr=0.1), 4)
    net.eval()
    x, _ = batch(9)
    with torch.no_grad():
        expected = net(x)
    compact_model(net, sp.masks)
    path = save_compact_checkpoint(net, tmp_path / "compact.pt")
    fresh = load_compact_checkpoint(small_net(5).eval(), path)
    assert fresh.compacted_channels() == net.compacted_channels()
    with torch.no_grad():
        assert torch.allclose(fresh(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="is not a compact E2ENet checkpoint"):
        torch.save(net.state_dict(), tmp_path / "plain.pt")
        load_compact_checkpoint(small_net(), tmp_path / "plain.pt")


def test_compact_refuses_a_name_that_is_not_a_mesh_block():
    net = small_net()
    with pytest.raises(ValueError, match="'encoder.0.0' is not a fusion block of the mesh"):
        net.compact({"encoder.0.0": [0]})
    net.compact({"mesh.0.0.fuse.0": [0, 3]})
    with pytest.raises(ValueError, match="already compacted"):
        net.compact({"mesh.0.0.fuse.0": [0]})


@pytest.mark.parametrize("bundle", ["e2enet_btcv_segmentation", "e2enet_brats_segmentation"])
def test_bundle_sparse_structure_id_reaches_the_handler(bundle):
    from monai.bundle import ConfigParser

    from e2enet_monai.bundle.registry import bundles_dir

    parser = ConfigParser()
    parser.read_config(str(bundles_dir() / bundle / "configs/train.json"))
    assert parser["sparse_structure"] == "kernel"  # the paper's default
    parser.update({"sparse_structure": "channel", "channels": [8, 16, 32], "strides": [1, 2, 2], "device": "cpu",
                   "summary_writer": None})  # no TensorBoard folder in the working directory
    handler = parser.get_parsed_content("train#sparse")
    assert handler.sparsity.structure == "channel"
    assert_whole_input_channels(handler.sparsity.model, handler.sparsity.masks, parser["sparse_density"])


@pytest.mark.parametrize("bundle", ["e2enet_btcv_segmentation", "e2enet_amos_ct_segmentation",
                                    "e2enet_brats_segmentation"])
def test_bundle_sparse_distribution_id_reaches_the_handler(bundle):
    """``sparse_distribution erk``: thin mesh tensors keep more input channels than wide ones, the mesh as a whole
    the same density; the default stays the paper's uniform allocation."""
    from monai.bundle import ConfigParser

    from e2enet_monai.bundle.registry import bundles_dir

    parser = ConfigParser()
    parser.read_config(str(bundles_dir() / bundle / "configs/train.json"))
    assert parser["sparse_distribution"] == "uniform"
    parser.update({"sparse_structure": "channel", "sparse_distribution": "erk", "channels": [8, 16, 32, 64],
                   "strides": [1, 2, 2, 2], "device": "cpu", "summary_writer": None})
    sparsity = parser.get_parsed_content("train#sparse").sparsity
    assert_whole_input_channels(sparsity.model, sparsity.masks, 0.2, "erk")
    kept = sparsity.masks.kernel_density()
    assert kept["mesh.2.0.fuse.1.conv.conv.weight"] == 5 / 8 and kept["mesh.0.2.up.weight"] == 8 / 64
    active, total = sparsity.masks.weight_counts(sparsity.model)
    assert active / total == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("bundle", ["e2enet_btcv_segmentation", "e2enet_amos_ct_segmentation",
                                    "e2enet_brats_segmentation"])
def test_bundle_sparse_channel_multiple_id_reaches_the_handler(bundle):
    """``sparse_channel_multiple 8``: every mesh tensor keeps a multiple of 8 input channels; the default (1) keeps
    the counts the density gives."""
    from monai.bundle import ConfigParser

    from e2enet_monai.bundle.registry import bundles_dir

    parser = ConfigParser()
    parser.read_config(str(bundles_dir() / bundle / "configs/train.json"))
    assert parser["sparse_channel_multiple"] == 1
    parser.update({"sparse_structure": "channel", "sparse_channel_multiple": 8, "channels": [8, 16, 32, 64],
                   "strides": [1, 2, 2, 2], "device": "cpu", "summary_writer": None})
    sparsity = parser.get_parsed_content("train#sparse").sparsity
    assert_whole_input_channels(sparsity.model, sparsity.masks, 0.2, multiple=8)
    level0 = "mesh.0.0.fuse.0.conv.conv.weight"
    kept = sparsity.masks.masks[level0].any(dim=1 - input_channel_axis(sparsity.model, level0))
    assert int(kept.sum()) == 8  # 0.2 of 16 channels would be 3


@pytest.mark.parametrize("bundle", ["e2enet_btcv_segmentation", "e2enet_amos_ct_segmentation",
                                    "e2enet_brats_segmentation"])
def test_bundle_sparse_death_rate_id_sets_the_schedule(bundle):
    """``sparse_death_rate``: the fraction of active kernels or channels swapped at the first mask update, decayed
    by a cosine to 0.001 (default 0.5, the paper's)."""
    from monai.bundle import ConfigParser

    from e2enet_monai.bundle.registry import bundles_dir

    parser = ConfigParser()
    parser.read_config(str(bundles_dir() / bundle / "configs/train.json"))
    assert parser["sparse_death_rate"] == 0.5
    parser.update({"sparse_death_rate": 0.2, "channels": [8, 16, 32, 64], "strides": [1, 2, 2, 2], "device": "cpu",
                   "summary_writer": None})
    sparsity = parser.get_parsed_content("train#sparse").sparsity
    sparsity.total_iterations = 600
    assert sparsity.death_rate(0) == pytest.approx(0.2)
    assert sparsity.death_rate(300) == pytest.approx((0.2 + 0.001) / 2)
