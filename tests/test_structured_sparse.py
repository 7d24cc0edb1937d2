"""Channel-structured dynamic sparsity and the compaction of a trained mesh into smaller dense convolutions."""

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
    refusal = "channel_multiple must be 1 with kernel masks, or a positive integer with structure 'channel'; got 8"
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


def test_resume_refuses_another_structure():
    net = small_net()
    state = DynamicSparsity(net, 0.3, structure="channel").state_dict()
    with pytest.raises(ValueError, match="structure 'channel', this run uses 'kernel'"):
        DynamicSparsity(small_net(), 0.3).load_state_dict(state)
    with pytest.raises(ValueError, match="sparse structure must be one of"):
        DynamicSparsity(net, 0.3, structure="filter")



def live_channels(net, masks):
    """Input channels of every masked tensor that some active kernel reads."""
    return {n: int(m.any(dim=1 - input_channel_axis(net, n)).sum()) for n, m in masks.masks.items()}


def test_channel_warmup_narrows_kernel_masks_to_whole_channels():
    """Kernel masks with as many active kernels as the channel masks have, fewer live input channels after each
    update of the warm-up (linearly from all to the kept count), whole channels in multiples of 8 from the update at
    ``warmup_end`` on, every tensor's count kept throughout; the trained mesh then compacts to the masked output."""
    def net_():
        torch.manual_seed(0)
        return E2ENet(3, 1, 3, channels=(16, 32, 64), strides=(1, 2, 2), deep_supervision=False)

    channel_from_start = DynamicSparsity(net_(), 0.2, structure="channel", channel_multiple=8).masks
    net = net_()
    sp = DynamicSparsity(net, 0.2, update_frequency=2, total_iterations=12, structure="channel", channel_multiple=8,
                         channel_warmup=0.5)
    budget = {n: int(m.sum()) for n, m in channel_from_start.masks.items()}
    kept = live_channels(net, channel_from_start)
    assert sp.warmup_end() == 6 and sp.narrowing()
    assert {n: int(m.sum()) for n, m in sp.masks.masks.items()} == budget
    level0 = "mesh.0.0.fuse.0.conv.conv.weight"  # 32 input channels, 8 kept
    assert (kept[level0], live_channels(net, sp.masks)[level0]) == (8, 32)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    previous = live_channels(net, sp.masks)
    for update, progress in enumerate((2 / 6, 4 / 6, 1.0)):  # the updates at iterations 2, 4 and 6
        train_steps(net, sp, optimizer, 2, start=2 * update)
        assert {n: int(m.sum()) for n, m in sp.masks.masks.items()} == budget
        live = live_channels(net, sp.masks)
        for name, count in live.items():
            channels = sp.masks.masks[name].shape[input_channel_axis(net, name)]
            assert count <= kept[name] + round((channels - kept[name]) * (1 - progress)), name
            assert count <= previous[name], name
        assert live[level0] < previous[level0]
        previous = live
    assert not sp.narrowing()
    assert_whole_input_channels(net, sp.masks, 0.2, multiple=8)
    masks_at_end_of_warmup = {n: m.clone() for n, m in sp.masks.masks.items()}
    train_steps(net, sp, optimizer, 6, start=6)  # channel updates at 8 and 10
    assert_whole_input_channels(net, sp.masks, 0.2, multiple=8)
    assert any(not torch.equal(masks_at_end_of_warmup[n], m) for n, m in sp.masks.masks.items())
    net.eval()
    x, _ = batch(3)
    with torch.no_grad():
        expected = net(x)
    keep = compact_model(net, sp.masks)
    assert len(keep[level0.removesuffix(".conv.conv.weight")]) == 8
    with torch.no_grad():
        assert torch.allclose(net(x), expected, rtol=1e-5, atol=1e-5)


def test_channel_warmup_keeps_the_strongest_channels():
    """The live channels after a warm-up update are those whose active kernels have the largest L1 norm."""
    net = small_net()
    sp = DynamicSparsity(net, 0.25, update_frequency=1, total_iterations=10, structure="channel",
                         channel_warmup=0.5)
    name = "mesh.0.0.fuse.0.conv.conv.weight"  # (8 out, 16 in): 4 channels kept, a budget of 32 kernels
    mask = torch.zeros(8, 16, dtype=torch.bool)
    mask[:2] = True  # every input channel with 2 active kernels
    sp.masks.masks[name] = mask
    weight = dict(net.named_parameters())[name]
    with torch.no_grad():
        weight.copy_(sp.masks.expand(mask, weight))
        weight[:, :4] *= 100.0  # 4 strong channels, 4 medium ones, 8 weak ones
        weight[:, 4:8] *= torch.linspace(10.0, 20.0, 4).view(1, 4, 1, 1, 1)
    sp.iteration = 4  # the update at iteration 4 of a warm-up ending at 5: 4 + round(12 / 5) = 6 live channels
    sp.update()
    live = sp.masks.masks[name].any(dim=0).nonzero().flatten().tolist()
    assert live == [0, 1, 2, 3, 6, 7]  # the 4 strong and the 2 strongest medium ones
    assert int(sp.masks.masks[name].sum()) == 32


def test_channel_warmup_refusals():
    with pytest.raises(ValueError, match="above 0 only with structure 'channel'; got 0.5 with structure 'kernel'"):
        DynamicSparsity(small_net(), 0.2, channel_warmup=0.5)
    with pytest.raises(ValueError, match=r"channel_warmup must be in \[0, 1\)"):
        DynamicSparsity(small_net(), 0.2, structure="channel", channel_warmup=1.0)
    late = ("channel_warmup=0.6 leaves whole input channels at the mask update of iteration 10, but training ends at "
            "iteration 10: lower channel_warmup or update_frequency \\(5\\)")
    with pytest.raises(ValueError, match=late):
        DynamicSparsity(small_net(), 0.2, structure="channel", update_frequency=5, total_iterations=10,
                        channel_warmup=0.6)


def test_handler_checks_the_channel_warmup_against_the_run_length():
    """Without total_iterations the handler learns the run's length when the trainer starts, and refuses a warm-up
    that would not end before it there, before the first iteration."""
    from ignite.engine import Engine

    from e2enet_monai.handlers import SparseTrainingHandler

    steps = []
    trainer = Engine(lambda engine, batch: steps.append(batch))
    SparseTrainingHandler(small_net(), 0.2, structure="channel", update_frequency=5, channel_warmup=0.6).attach(trainer)
    with pytest.raises(ValueError, match="update of iteration 10, but training ends at iteration 10"):
        trainer.run(range(5), max_epochs=2)
    assert steps == []


def test_resume_in_the_channel_warmup_equals_uninterrupted_run(tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        def fresh(warmup=0.5):
            net = small_net(3)
            sp = DynamicSparsity(net, 0.25, update_frequency=2, total_iterations=10, seed=5, structure="channel",
                                 channel_warmup=warmup)
            return net, sp, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)

        net_a, sp_a, opt_a = fresh()
        train_steps(net_a, sp_a, opt_a, 10)
        net_b, sp_b, opt_b = fresh()
        train_steps(net_b, sp_b, opt_b, 3)  # stopped in the warm-up (updates at 2 and 4 narrow, 6 ends it)
        assert sp_b.narrowing()
        torch.save({"model": net_b.state_dict(), "opt": opt_b.state_dict(), "sparse": sp_b.state_dict()},
                   tmp_path / "ckpt.pt")
        ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
        net_c, sp_c, opt_c = fresh()
        net_c.load_state_dict(ckpt["model"])
        opt_c.load_state_dict(ckpt["opt"])
        sp_c.load_state_dict(ckpt["sparse"])
        train_steps(net_c, sp_c, opt_c, 7, start=3)
        for name in sp_a.masks.masks:
            assert torch.equal(sp_a.masks.masks[name], sp_c.masks.masks[name]), name
        for (name, pa), pc in zip(net_a.state_dict().items(), net_c.state_dict().values()):
            assert torch.equal(pa, pc), name
        with pytest.raises(ValueError, match="trained with channel_warmup 0.5, this run uses 0.0"):
            fresh(0.0)[1].load_state_dict(ckpt["sparse"])
    finally:
        torch.use_deterministic_algorithms(False)

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
def test_bundle_sparse_channel_warmup_id_reaches_the_handler(bundle):
    """``sparse_channel_warmup 0.5``: the mesh starts as kernel masks with the channel masks' count; the default (0)
    starts from whole channels."""
    from monai.bundle import ConfigParser

    from e2enet_monai.bundle.registry import bundles_dir

    parser = ConfigParser()
    parser.read_config(str(bundles_dir() / bundle / "configs/train.json"))
    assert parser["sparse_channel_warmup"] == 0.0
    parser.update({"sparse_structure": "channel", "sparse_channel_warmup": 0.5, "channels": [8, 16, 32, 64],
                   "strides": [1, 2, 2, 2], "device": "cpu", "summary_writer": None})
    sparsity = parser.get_parsed_content("train#sparse").sparsity
    assert sparsity.channel_warmup == 0.5 and sparsity.narrowing()
    active, total = sparsity.masks.weight_counts(sparsity.model)
    assert active / total == pytest.approx(0.2, abs=0.02)
