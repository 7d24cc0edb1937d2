import logging
import math

import pytest
import torch
import warm
from ignite.engine import Events
from monai.engines import SupervisedTrainer

from e2enet_monai.handlers import SparseTrainingHandler
from e2enet_monai.networks import E2ENet
from e2enet_monai.sparse import (
    DynamicSparsity,
    KernelMasks,
    cosine_death_rate,
    kernel_densities,
    load_sparse_state_dict,
    save_sparse_state_dict,
    sparse_setting_problems,
)


def small_net(seed=0):
    torch.manual_seed(seed)
    return E2ENet(3, 1, 3, channels=(8, 16, 32), strides=(1, 2, 2), deep_supervision=False)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 1, 16, 16, 16, generator=g), torch.randint(0, 3, (2, 16, 16, 16), generator=g)


def train_steps(net, sparsity, optimizer, steps, start=0):
    for i in range(start, start + steps):
        x, y = batch(i)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        sparsity.before_step()
        optimizer.step()
        sparsity.after_step(optimizer)


def expected_active(total, density):
    return min(total, max(1, round(density * total)))


def assert_exact_density(sparsity, densities):
    for name, mask in sparsity.masks.masks.items():
        assert int(mask.sum()) == expected_active(mask.numel(), densities[name]), name


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
@pytest.mark.parametrize("growth", ["random", "gradient"])
def test_density_exact_after_init_and_every_update(distribution, growth):
    net = small_net()
    sp = DynamicSparsity(net, 0.3, distribution, growth=growth, update_frequency=2, total_iterations=8)
    shapes = {n: tuple(p.shape) for n, p in net.named_parameters() if n in sp.masks.masks}
    densities = kernel_densities(shapes, 0.3, distribution)
    assert_exact_density(sp, densities)
    before = {n: m.clone() for n, m in sp.masks.masks.items()}
    train_steps(net, sp, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), 6)
    assert_exact_density(sp, densities)
    assert any(not torch.equal(before[n], m) for n, m in sp.masks.masks.items())  # updates happened


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.99, nesterov=True, weight_decay=3e-5),
        lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
    ],
    ids=["sgd", "adamw"],
)
def test_masked_weights_and_optimizer_state_stay_zero(make_opt):
    net = small_net()
    sp = DynamicSparsity(net, 0.2, update_frequency=3, total_iterations=10)
    opt = make_opt(net.parameters())
    params = dict(net.named_parameters())
    for step in range(7):
        train_steps(net, sp, opt, 1, start=step)
        for name, mask in sp.masks.masks.items():
            inactive = ~KernelMasks.expand(mask, params[name]).bool().expand_as(params[name])
            assert params[name][inactive].abs().sum() == 0, (step, name)
            for value in opt.state[params[name]].values():
                if torch.is_tensor(value) and value.shape == params[name].shape:
                    assert value[inactive].abs().sum() == 0, (step, name)


def test_nothing_outside_selected_parameters_is_masked():
    net = small_net()
    reference = {n: p.detach().clone() for n, p in net.named_parameters()}
    sp = DynamicSparsity(net, 0.2)
    assert set(sp.masks.masks) == set(net.mesh_parameter_names())
    for name, param in net.named_parameters():
        if name not in sp.masks.masks:
            assert torch.equal(param, reference[name]), name
    sp_enc = DynamicSparsity(small_net(), 0.5, parameters=[r"encoder\.0\..*conv\.weight"])
    assert set(sp_enc.masks.masks) == {"encoder.0.0.conv.conv.weight", "encoder.0.1.conv.conv.weight"}


def test_prune_removes_smallest_l1_kernels_and_regrows_at_zero():
    net = small_net()
    sp = DynamicSparsity(net, 0.5, death_rate=0.25, final_death_rate=0.25, update_frequency=1, total_iterations=10)
    name = next(iter(sp.masks.masks))
    param = dict(net.named_parameters())[name]
    with torch.no_grad():
        param.normal_()
        sp.masks.apply(net)
    mask = sp.masks.masks[name].clone()
    norms = param.detach().abs().flatten(2).sum(2)
    active_norms = norms[mask]
    n = math.ceil(0.25 * int(mask.sum()))
    active_idx = torch.nonzero(mask)  # row-major, the order of norms[mask]
    expected_pruned = {tuple(active_idx[i].tolist()) for i in torch.topk(active_norms, n, largest=False).indices}
    sp.update()
    new = sp.masks.masks[name]
    pruned = {tuple(p) for p in torch.nonzero(mask & ~new).tolist()}
    grown = {tuple(p) for p in torch.nonzero(~mask & new).tolist()}
    assert pruned == expected_pruned
    assert len(grown) == n
    for a, b in grown:
        assert param[a, b].abs().sum() == 0  # regrown kernels start at zero
    for a, b in pruned:
        assert param[a, b].abs().sum() == 0


def test_gradient_growth_picks_largest_gradients():
    net = small_net()
    sp = DynamicSparsity(net, 0.5, growth="gradient", death_rate=0.2, final_death_rate=0.2, total_iterations=10)
    x, y = batch()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    name = "mesh.0.0.up.weight"  # a transposed conv: (in, out, k, k, k), norms over the kernel dims
    param = dict(net.named_parameters())[name]
    mask = sp.masks.masks[name].clone()
    gnorm = param.grad.abs().flatten(2).sum(2)
    n = math.ceil(0.2 * int(mask.sum()))
    inactive = torch.nonzero(~mask)
    best = {tuple(inactive[i].tolist()) for i in torch.topk(gnorm[~mask], n).indices}
    sp.update()
    grown = {tuple(p) for p in torch.nonzero(~mask & sp.masks.masks[name]).tolist()}
    assert grown == best


def test_erk_densities_average_to_target():
    net = E2ENet(3, 1, 16)
    params = dict(net.named_parameters())
    shapes = {n: tuple(params[n].shape) for n in net.mesh_parameter_names()}
    d = kernel_densities(shapes, 0.2, "erk")
    numel = {n: params[n].numel() for n in shapes}
    assert sum(d[n] * numel[n] for n in d) / sum(numel.values()) == pytest.approx(0.2, abs=1e-9)
    assert len(set(round(v, 6) for v in d.values())) > 3 and max(d.values()) <= 1.0
    masks = KernelMasks.random(net, 0.2, "erk", seed=0)
    active, total = masks.weight_counts(net)
    assert active / total == pytest.approx(0.2, abs=0.002)


def test_death_rate_schedule():
    assert cosine_death_rate(0, 1000) == pytest.approx(0.5)
    assert cosine_death_rate(500, 1000) == pytest.approx((0.5 + 0.001) / 2)
    assert cosine_death_rate(1000, 1000) == pytest.approx(0.001)
    assert cosine_death_rate(5000, 1000) == pytest.approx(0.001)
    assert cosine_death_rate(250, 1000) > cosine_death_rate(750, 1000)


def test_same_seed_same_masks():
    a = DynamicSparsity(small_net(0), 0.2, seed=7).masks.masks
    b = DynamicSparsity(small_net(1), 0.2, seed=7).masks.masks
    c = DynamicSparsity(small_net(0), 0.2, seed=8).masks.masks
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"density": 0.0}, r"density must be a number in \(0, 1\], got 0.0"),
        ({"density": 1.5}, r"density must be a number in \(0, 1\], got 1.5"),
        ({"growth": "momentum"}, "growth must be one of"),
        ({"distribution": "er"}, "distribution"),
        ({"parameters": ["decoder.*"]}, "matches no parameter"),
        ({"death_rate": 1.2}, r"death_rate must be a number in \[0.001 \(the final death rate\), 1\), got 1.2"),
        ({"update_frequency": 0}, "update_frequency"),
    ],
)
def test_wrong_settings_fail_at_start(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseTrainingHandler(small_net(), **kwargs)


def test_setting_problems_name_every_wrong_setting_with_what_it_accepts():
    assert sparse_setting_problems() == {}  # the paper's defaults
    assert sparse_setting_problems(structure="channel", channel_multiple=8, death_rate=0.001, density=1) == {}
    problems = sparse_setting_problems(density="0.2", distribution="er", growth="momentum", death_rate=0.0005,
                                       update_frequency=1.5, structure="filter", channel_multiple=True)
    assert problems == {
        "density": "must be a number in (0, 1], got '0.2'",
        "distribution": "must be one of ('uniform', 'erk'), got 'er'",
        "growth": "must be one of ('random', 'gradient'), got 'momentum'",
        "death_rate": "must be a number in [0.001 (the final death rate), 1), got 0.0005",
        "update_frequency": "must be a whole number of iterations >= 1, got 1.5",
        "structure": "must be one of ('kernel', 'channel'), got 'filter'",
        "channel_multiple": "must be a whole number >= 1, got True",
    }
    assert sparse_setting_problems(final_death_rate=-0.1, total_iterations=0) == {
        "final_death_rate": "must be a number in [0, 1), got -0.1",
        "total_iterations": "must be a whole number >= 1, got 0",
    }
    # every problem in one error, nothing masked yet
    net = small_net()
    before = {n: p.clone() for n, p in net.named_parameters()}
    with pytest.raises(ValueError, match=r"sparse training settings: density .*; growth must be one of"):
        DynamicSparsity(net, density=2, growth="momentum")
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())


def test_resume_equals_uninterrupted_run(tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        n, m = 4, 4

        def fresh():
            net = small_net(3)
            sp = DynamicSparsity(net, 0.3, growth="random", update_frequency=3, total_iterations=n + m, seed=5)
            return net, sp, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)

        net_a, sp_a, opt_a = fresh()
        train_steps(net_a, sp_a, opt_a, n + m)

        net_b, sp_b, opt_b = fresh()
        train_steps(net_b, sp_b, opt_b, n)
        torch.save({"model": net_b.state_dict(), "opt": opt_b.state_dict(), "sparse": sp_b.state_dict()},
                   tmp_path / "ckpt.pt")
        net_c, sp_c, opt_c = fresh()
        ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
        net_c.load_state_dict(ckpt["model"])
        opt_c.load_state_dict(ckpt["opt"])
        sp_c.load_state_dict(ckpt["sparse"])
        train_steps(net_c, sp_c, opt_c, m, start=n)

        assert sp_c.iteration == sp_a.iteration == n + m
        for name in sp_a.masks.masks:
            assert torch.equal(sp_a.masks.masks[name], sp_c.masks.masks[name])
        for (name, pa), pc in zip(net_a.state_dict().items(), net_c.state_dict().values()):
            assert torch.equal(pa, pc), name
    finally:
        torch.use_deterministic_algorithms(False)


def test_sparse_export_roundtrip_and_size(tmp_path):
    net = E2ENet(3, 1, 16)
    masks = KernelMasks.random(net, 0.2, seed=0)
    masks.apply(net)
    state = net.state_dict()
    dense_path = tmp_path / "dense.pt"
    torch.save({"model": state}, dense_path)
    sparse_path = save_sparse_state_dict(state, list(masks.masks), tmp_path / "sparse.pt")
    loaded = load_sparse_state_dict(sparse_path)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    ratio = sparse_path.stat().st_size / dense_path.stat().st_size
    assert 0.35 < ratio < 0.45  # 5.8M dense + 0.2 x 18.1M sparse weights of 23.9M: about 0.40
    with pytest.raises(ValueError, match="not a kernel-sparse checkpoint"):
        load_sparse_state_dict(dense_path)


def test_handler_on_monai_trainer_logs_updates_and_keeps_density(caplog):
    net = small_net()
    data = [{"image": batch(i)[0][0], "label": batch(i)[1][0][None]} for i in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    handler = SparseTrainingHandler(net, density=0.25, update_frequency=2, mask_gradients=True)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=3, train_data_loader=loader, network=net, optimizer=opt,
        loss_function=lambda p, t: torch.nn.functional.cross_entropy(p, t[:, 0].long()),
        train_handlers=[handler],
    )
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(handler.sparsity.iteration))
    with caplog.at_level(logging.INFO, logger="SparseTraining"):
        trainer.run()
    assert seen == [1, 2, 3, 4, 5, 6]
    assert handler.sparsity.total_iterations == 6
    assert sum("mask update at iteration" in r.message for r in caplog.records) == 2  # at 2 and 4, not at the end
    active, total = handler.sparsity.masks.weight_counts(net)
    assert active / total == pytest.approx(0.25, abs=0.01)


def test_disabled_handler_leaves_network_dense():
    net = small_net()
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    handler = SparseTrainingHandler(net, enabled=False)
    assert handler.sparsity is None and handler.state_dict() == {}
    assert all(torch.equal(ref[k], v) for k, v in net.state_dict().items())


def test_export_tool_roundtrip(tmp_path):
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    net = small_net()
    sp = DynamicSparsity(net, 0.2)
    torch.save({"model": net.state_dict(), "sparse": sp.state_dict()}, tmp_path / "model.pt")
    tool = [sys.executable, str(root / "tools/export_sparse.py")]
    out = warm.run(tool + ["export", str(tmp_path / "model.pt"), str(tmp_path / "c.pt")], capture_output=True,
                   text=True, timeout=120)
    assert out.returncode == 0 and "MiB dense" in out.stdout, out.stderr
    out = warm.run(tool + ["export", str(tmp_path / "model.pt"), str(tmp_path / "c.pt")], capture_output=True,
                   text=True, timeout=120)
    assert out.returncode != 0 and "exists" in out.stderr
    out = warm.run(tool + ["restore", str(tmp_path / "c.pt"), str(tmp_path / "back.pt")], capture_output=True,
                   text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    back = torch.load(tmp_path / "back.pt", weights_only=True)["model"]
    assert all(torch.equal(back[k], v) for k, v in net.state_dict().items())
