import pytest
import torch

from e2enet_monai.networks import E2ENet
from e2enet_monai.networks.nets import nnunet_like_dynunet


@pytest.fixture(scope="module")
def paper_net():
    torch.manual_seed(0)
    return E2ENet(spatial_dims=3, in_channels=1, out_channels=16)


def test_dense_parameter_count_matches_paper(paper_net):
    total = sum(p.numel() for p in paper_net.parameters())
    assert abs(total - 23.90e6) / 23.90e6 < 0.01
    mesh = paper_net.mesh_parameter_names()
    params = dict(paper_net.named_parameters())
    assert len(mesh) == 35  # 20 fusion convs + 15 transposed convs
    assert sum(params[n].numel() for n in mesh) == pytest.approx(18.07e6, rel=0.005)
    assert all(n.startswith("mesh.") for n in mesh)


def test_mesh_structure(paper_net):
    assert [len(stage) for stage in paper_net.mesh] == [5, 4, 3, 2, 1]
    widths = [paper_net.mesh[0][level].fuse[0].conv.conv.in_channels for level in range(5)]
    assert widths == [96, 240, 480, 832, 960]
    second_block = {(s + 1, lev) for s, stage in enumerate(paper_net.mesh) for lev, n in enumerate(stage)
                    if len(n.fuse) == 2}
    assert second_block == {(5 - lev, lev) for lev in range(5)}  # the last diagonal level + stage = 5


def test_eval_and_train_outputs(paper_net):
    """The smallest input the paper network trains on: two voxels at its 32x coarser bottleneck."""
    x = torch.randn(1, 1, 32, 32, 64)
    paper_net.eval()
    with torch.no_grad():
        y = paper_net(x)
    assert y.shape == (1, 16, 32, 32, 64)
    paper_net.train()
    outs = paper_net(x)
    assert [tuple(o.shape) for o in outs] == [(1, 16, s, s, 2 * s) for s in (32, 16, 8, 4)]
    sum(o.mean() for o in outs).backward()
    for name in paper_net.mesh_parameter_names():
        grad = dict(paper_net.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    paper_net.zero_grad(set_to_none=True)


def test_no_deep_supervision_returns_tensor_in_train():
    net = E2ENet(3, 2, 3, channels=(8, 16, 32), strides=(1, 2, 2), deep_supervision=False, deep_supr_num=1)
    assert net.train()(torch.randn(2, 2, 16, 16, 16)).shape == (2, 3, 16, 16, 16)


def test_anisotropic_strides():
    net = E2ENet(3, 4, 3, channels=(8, 16, 24, 32), strides=(1, (1, 2, 2), 2, 2), deep_supr_num=2)
    assert net.divisor == [4, 8, 8]
    net.train()
    outs = net(torch.randn(1, 4, 8, 16, 16))
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 16, 16), (8, 8, 8), (4, 4, 4)]


@pytest.mark.parametrize(
    "shape, match",
    [
        ((1, 64, 64, 64), r"5-D input .* got 4-D shape \[1, 64, 64, 64\]"),
        ((1, 3, 64, 64, 64), r"1 input channel\(s\), got 3"),
        ((1, 1, 64, 60, 64), r"divisible by \[32, 32, 32\].* \[64, 60, 64\]"),
        ((1, 1, 32, 32, 32), r"single voxel"),
    ],
)
def test_bad_input_raises_clear_value_error(paper_net, shape, match):
    with pytest.raises(ValueError, match=match):
        paper_net.eval()(torch.zeros(shape))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 2}, "spatial_dims must be 3"),
        ({"channels": (8, 16), "strides": (1, 2, 2)}, "one entry per level"),
        ({"strides": (1, 2, 2, 2, 2, (2, 2))}, "sequence of 3"),
        ({"deep_supr_num": 5}, "deep_supr_num"),
        ({"conv_mode": "sep"}, "conv_mode"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        E2ENet(**{"in_channels": 1, "out_channels": 2, **kwargs})


def test_conv_modes_change_parameter_count():
    dense = {m: sum(p.numel() for p in E2ENet(3, 1, 16, conv_mode=m).parameters())
             for m in ("shift", "plain2d", "conv3d")}
    assert dense["shift"] == dense["plain2d"] < dense["conv3d"]


def test_torchscript_matches_eager(tmp_path):
    torch.manual_seed(0)
    net = E2ENet(3, 1, 3, channels=(8, 16, 32, 32), strides=(1, 2, 2, 2)).eval()
    scripted = torch.jit.script(net)
    path = tmp_path / "net.ts"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path)).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_nnunet_like_baseline_size():
    assert sum(p.numel() for p in nnunet_like_dynunet(1, 16).parameters()) == pytest.approx(31.2e6, rel=0.01)


def test_batch_dice_pools_each_class_over_the_patches():
    """A class present in one patch and absent from the other: per-patch Dice scores the empty patch 0 for any
    prediction of it; batch Dice pools both patches, so it equals the Dice of the concatenated batch."""
    from monai.losses import DiceCELoss

    from e2enet_monai.losses import deep_supervision_dice_ce

    label = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    label[0, :, 2:6, 2:6, 2:6] = 1
    guess = label.clone()
    guess[1, :, :2, :2, :2] = 1  # right in the first patch, 8 false voxels in the second
    logits = 6.0 * torch.cat([1 - 2 * guess, 2 * guess - 1], 1).float()
    per_patch, pooled = deep_supervision_dice_ce(1), deep_supervision_dice_ce(1, batch_dice=True)
    joined = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, smooth_nr=1e-5, smooth_dr=1e-5)
    whole = joined(torch.cat(list(logits), -1)[None], torch.cat(list(label), -1)[None])
    assert torch.allclose(pooled([logits], label), whole, atol=1e-6)
    assert per_patch([logits], label) > pooled([logits], label) + 0.4  # (~1 + ~0) / 2 vs 1 - 128 / 136
