"""Top-k patch segmentation: candidate grid, selection, NMSWNet training forward, top-k patch inference."""

import math

import pytest
import torch
import torch.nn.functional as F
from monai.data.utils import dense_patch_slices
from monai.inferers import SlidingWindowInferer
from monai.inferers.utils import _get_scan_interval
from monai.networks.nets import SegResNet

from e2enet_monai.inferers import TopKPatchInferer, TopKPatchModel, coarse_uncertainty_scores, topk_patch_inference
from e2enet_monai.losses import TopKPatchLoss
from e2enet_monai.networks import E2ENet, NMSWNet, NMSWOutput
from e2enet_monai.networks.blocks import adaptive_k, gumbel_topk, topk_indices
from e2enet_monai.utils.patches import CandidateGrid, upsample_region

ROI = (16, 16, 16)
C = 3


def tiny_e2enet(in_channels=1):
    return E2ENet(3, in_channels, C, channels=[4, 8, 16], strides=[1, 2, 2], deep_supervision=False)


def make_model(k=3, fusion="gate", local=None, **kwargs):
    torch.manual_seed(0)
    glob = tiny_e2enet()
    return NMSWNet(glob, local or tiny_e2enet(), C, ROI, k=k, downsample=2, global_divisor=glob.divisor,
                   feature_layer="mesh.1.0", feature_channels=4, fusion=fusion, **kwargs)


@pytest.mark.parametrize("size", [(37, 40, 29), (16, 16, 16), (33, 17, 50)])
def test_candidate_grid_is_the_sliding_window_grid(size):
    grid = CandidateGrid.build(size, ROI, 0.5)
    expected = dense_patch_slices(size, ROI, _get_scan_interval(size, ROI, 3, (0.5,) * 3))
    assert sorted(grid.slices(i) for i in range(len(grid))) == sorted(expected)
    assert len(grid) == len(expected) and grid.origins() == [tuple(s.start for s in grid.slices(i))
                                                               for i in range(len(grid))]
    for i in range(len(grid)):  # inside the volume, also for sizes not divisible by the patch
        assert all(0 <= s.start and s.stop <= n for s, n in zip(grid.slices(i), size))


def test_candidate_grid_rejects_volume_smaller_than_patch():
    with pytest.raises(ValueError, match="at least as large"):
        CandidateGrid.build((10, 40, 40), ROI)


def test_topk_indices_are_the_highest_scores_with_stable_ties():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9, -1.0]])
    assert topk_indices(scores, 3).tolist() == [[1, 3, 2]]


def test_gumbel_topk_straight_through_weights_and_no_noise_equals_topk():
    scores = torch.randn(2, 20, requires_grad=True)
    idx, w = gumbel_topk(scores, 5, noise=False)
    assert torch.equal(idx, topk_indices(scores.detach(), 5))
    assert torch.equal(w.detach(), torch.ones(2, 5))  # forward value exactly 1
    w.sum().backward()
    assert scores.grad.abs().sum() > 0  # gradient of the soft probabilities
    g = torch.Generator().manual_seed(3)
    idx2, _ = gumbel_topk(scores.detach(), 5, generator=g)
    assert all(len(set(row.tolist())) == 5 for row in idx2)  # no candidate twice


def test_adaptive_k_respects_mass_and_bounds():
    scores = torch.tensor([[10.0, 9.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 6])
    assert adaptive_k(scores, 0.9) == [2, 6]  # peaked row: 2 cells hold 90 %; flat row needs all
    assert adaptive_k(scores, 0.9, k_min=3, k_max=4) == [3, 4]
    with pytest.raises(ValueError, match="k_min"):
        adaptive_k(scores, 0.5, k_min=5, k_max=2)


def test_upsample_region_equals_full_upsampling_cropped():
    coarse = torch.randn(1, 2, 9, 11, 7)
    full = F.interpolate(coarse, scale_factor=3, mode="trilinear", align_corners=False)
    for origin in [(0, 0, 0), (5, 13, 2), (11, 17, 5)]:
        size = (16, 16, 16)
        box = full[(..., *(slice(o, o + s) for o, s in zip(origin, size)))]
        assert torch.allclose(upsample_region(coarse, origin, size, 3), box, atol=1e-5)


@pytest.mark.parametrize("size", [(37, 40, 29), (12, 20, 16)])
def test_all_patches_with_patch_only_gate_equal_sliding_window(size):
    model = make_model().eval()
    with torch.no_grad():
        model.fusion.weight.fill_(100.0)  # sigmoid(100) == 1: the fused output is the patch branch
    x = torch.rand(1, 1, *size)
    topk = TopKPatchInferer(k=10**6, patch_batch_size=4)(x, model)
    sw = SlidingWindowInferer(ROI, sw_batch_size=4, overlap=0.5, mode="gaussian")(x, model.local_net)
    assert topk.shape == (1, C, *size)
    assert torch.allclose(topk, sw, atol=1e-5)


def test_topk_mode_is_deterministic_and_picks_the_best_allowed_candidates():
    model = make_model(k=4).eval()
    x = torch.rand(2, 1, 37, 40, 29)
    inferer = TopKPatchInferer(k=4)
    first = inferer(x, model)
    selection = [sel for sel, _ in inferer.last_selection]
    assert torch.equal(first, inferer(x, model))
    grid = inferer.last_selection[0][1]
    with torch.no_grad():
        coarse, feature = model.global_forward(x)
        scores = model.candidate_scores(coarse, feature, grid)
    for b in range(2):
        assert selection[b] == sorted(topk_indices(scores[b : b + 1], 4)[0].tolist())
    assert torch.equal(TopKPatchInferer()(x, model), first)  # k from the model (4)
    # the forward in eval() mode picks the same patches and blends them with the same aggregation
    out = model(x)
    assert isinstance(out, NMSWOutput) and not out.local_boxes[len(selection[0]) * 2:]
    assert torch.allclose(out.pred, first, atol=1e-5)


def test_background_mask_never_leaves_fewer_than_k(monkeypatch):
    model = make_model(k=5).eval()
    x = torch.rand(1, 1, 37, 40, 29)
    coarse, feature = model.global_forward(x)
    background = torch.zeros_like(coarse)
    background[:, 0] = 1.0  # the global network predicts background everywhere: every candidate is masked
    grid = CandidateGrid.build(x.shape[2:], ROI)
    assert (model.candidate_scores(background, feature, grid) < -1e3).all()
    monkeypatch.setattr(model, "global_forward", lambda image: (background, feature))
    inferer = TopKPatchInferer(k=5)
    out = inferer(x, model)
    assert len(inferer.last_selection[0][0]) == 5 and out.shape == (1, C, 37, 40, 29)


def test_sample_mode_is_seeded_and_adaptive_k_is_bounded():
    model = make_model().eval()
    x = torch.rand(1, 1, 37, 40, 29)
    a = TopKPatchInferer(k=3, mode="sample", seed=1)
    b = TopKPatchInferer(k=3, mode="sample", seed=1)
    assert torch.equal(a(x, model), b(x, model))
    adaptive = TopKPatchInferer(mass=0.999, k_min=2, k_max=6)
    adaptive(x, model)
    assert 2 <= len(adaptive.last_selection[0][0]) <= 6


def test_inferer_rejects_plain_networks_and_reads_its_geometry_from_the_model():
    model = make_model().eval()
    x = torch.rand(1, 1, 32, 32, 32)
    assert isinstance(model, TopKPatchModel) and not isinstance(model.local_net, TopKPatchModel)
    with pytest.raises(TypeError, match="SlidingWindowInferer"):
        TopKPatchInferer()(x, model.local_net)
    with pytest.raises(ValueError, match="inputs must be"):
        TopKPatchInferer()(x[0], model)
    out, selection = topk_patch_inference(x, model, k=2)
    assert out.shape == (1, C, 32, 32, 32) and len(selection[0][0]) == 2
    assert selection[0][1] == CandidateGrid.build((32, 32, 32), model.roi_size, model.overlap)


def test_training_gathers_only_selected_patches_and_gradients_reach_scores_through_selection():
    model = make_model(k=3, random_patches=1).train()
    seen = []
    model.local_net.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    x = torch.rand(2, 1, 32, 40, 40)
    y = torch.randint(0, C, (2, 1, 32, 40, 40))
    out = model(x, y)
    assert seen == [2 * (3 + 1)]  # K picks + 1 random patch per volume, never all candidates
    assert out.pred.shape == (2, C, 32, 40, 40) and out.local.shape == (8, C, *ROI)
    # only the aggregated and local terms: the score head and the global network get gradients through the picks
    loss_fn = TopKPatchLoss(downsample=2)
    local_label = torch.stack([y[(b, slice(None), *(slice(o, o + r) for o, r in zip(org, ROI)))]
                               for b, org in out.local_boxes])
    (loss_fn.loss(out.pred, y) + loss_fn.loss(out.local, local_label)).backward()
    assert model.score_head.net[-1].weight.grad.abs().sum() > 0
    assert sum(p.grad.abs().sum() for p in model.global_net.parameters() if p.grad is not None) > 0
    assert model.fusion.weight.grad.abs().sum() > 0


def test_full_loss_trains_and_works_with_other_monai_segmenters():
    local = SegResNet(spatial_dims=3, in_channels=1, out_channels=C, init_filters=8, blocks_down=(1, 1),
                      blocks_up=(1,))
    model = make_model(k=2, fusion="conv", local=local).train()
    torch.manual_seed(1)
    x = torch.rand(1, 1, 32, 32, 32)
    y = (x > 0.5).long() + (x > 0.8).long()
    loss_fn = TopKPatchLoss(downsample=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(model(x, y), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0], losses
    assert TopKPatchInferer()(x, model.eval()).shape == (1, C, 32, 32, 32)


def test_training_input_smaller_than_patch_is_a_clear_error():
    model = make_model().train()
    with pytest.raises(ValueError, match="at least roi_size"):
        model(torch.rand(1, 1, 8, 32, 32))


def test_k_zero_is_the_global_network_alone():
    """K = 0: no local-network call, the output is the coarse prediction upsampled to the input (cropped back)."""
    model = make_model().eval()
    calls = []
    model.local_net.register_forward_hook(lambda m, args, out: calls.append(1))
    x = torch.rand(1, 1, 37, 40, 29)
    inferer = TopKPatchInferer(k=0)
    out = inferer(x, model)
    assert not calls and inferer.last_selection[0][0] == []
    with torch.no_grad():
        coarse, _ = model.global_forward(x)
    expected = upsample_region(coarse, (0, 0, 0), x.shape[2:], model.downsample)
    assert out.shape == (1, C, 37, 40, 29) and torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(ValueError, match="k must be >= 0"):
        TopKPatchInferer(k=-1)


def test_uncertainty_scores_sum_the_coarse_uncertainty_over_every_coarse_voxel_a_box_touches():
    """Softmax: 1 - the top probability; sigmoid channels: the largest 1 - |2p - 1|; summed per candidate box."""
    spatial, downsample = (40, 36, 30), 3
    grid = CandidateGrid.build(spatial, ROI, 0.5)
    small = [math.ceil(n / downsample) for n in spatial]
    coarse = torch.full((1, C, *small), -20.0)
    coarse[:, 0] = 20.0  # sure background everywhere ...
    coarse[0, :, 9:, 8:, 7:] = 0.0  # ... but in the far corner: uniform, uncertainty 1 - 1 / C
    scores = coarse_uncertainty_scores(coarse, grid, downsample)
    for i, origin in enumerate(grid.origins()):
        box = [range(o // downsample, math.ceil((o + r) / downsample)) for o, r in zip(origin, ROI)]
        unsure = sum(1 for z in box[0] for y in box[1] for x in box[2] if z >= 9 and y >= 8 and x >= 7)
        assert scores[0, i].item() == pytest.approx(unsure * (1 - 1 / C), abs=1e-4)
    assert int(scores.argmax()) == len(grid) - 1  # the corner candidate first
    logits = torch.full((1, 2, *small), 8.0)
    logits[0, 1, :2] = 0.0  # one channel at p = 0.5 in the first two slices: uncertainty 1 there
    sig = coarse_uncertainty_scores(logits, grid, downsample, sigmoid=True)
    first = [i for i, o in enumerate(grid.origins()) if o[0] // downsample < 2]
    assert set(first) == {i for i in range(len(grid)) if sig[0, i] > 1}


def test_uncertainty_selection_refines_where_the_global_network_is_least_sure():
    model = make_model(k=2).eval()
    x = torch.rand(1, 1, 37, 40, 29)
    out, picks = topk_patch_inference(x, model, selection="uncertainty")
    with torch.no_grad():
        coarse, _ = model.global_forward(x)
    scores = coarse_uncertainty_scores(coarse, picks[0][1], model.downsample)
    assert picks[0][0] == sorted(topk_indices(scores, 2)[0].tolist())
    inferer = TopKPatchInferer(selection="uncertainty", output="labels")
    labels = inferer(x, model)
    assert inferer.last_selection[0][0] == picks[0][0]
    assert torch.equal(labels, out.argmax(1, keepdim=True).to(torch.uint8))
    with pytest.raises(ValueError, match="selection='uncertainty'.*use selection='learned'"):
        TopKPatchInferer(selection="uncertainty", mode="sample")
    with pytest.raises(ValueError, match="no mass"):
        TopKPatchInferer(selection="uncertainty", mass=0.9)
    with pytest.raises(ValueError, match="selection one of"):
        TopKPatchInferer(selection="oracle")


def _dense_blend(coarse, patches, boxes, spatial, weight, downsample):
    """The aggregation written out densely: weighted sums over the whole volume, then coarse where no patch."""
    total = torch.zeros(coarse.shape[0], coarse.shape[1], *spatial)
    count = torch.zeros(coarse.shape[0], 1, *spatial)
    for patch, (b, origin) in zip(patches, boxes):
        region = (b, slice(None), *(slice(o, o + r) for o, r in zip(origin, weight.shape)))
        total[region] += weight * patch
        count[region] += weight
    up = F.interpolate(coarse, scale_factor=downsample, mode="trilinear", align_corners=False)
    up = up[(slice(None), slice(None), *(slice(0, s) for s in spatial))]
    return torch.where(count > 0, total / count.clamp_min(1e-12), up)


def test_blend_holds_only_the_refined_cells_and_its_labels_are_the_argmax_of_its_logits():
    from e2enet_monai.networks.blocks import PatchAccumulator

    torch.manual_seed(0)
    spatial, roi, downsample = (40, 36, 30), (16, 16, 16), 2
    grid = CandidateGrid.build(spatial, roi, 0.5)
    boxes = [(0, grid.origin(i)) for i in (0, 1, len(grid) - 1)] + [(1, grid.origin(3))]  # overlapping, edge
    weight = torch.rand(roi) + 0.1
    coarse = torch.randn(2, C, 20, 18, 15)
    patches = torch.randn(len(boxes), C, *roi)
    blend = PatchAccumulator(2, C, spatial, weight, boxes)
    blend.add(patches[:2], boxes[:2])  # in batches, as inference adds them
    blend.add(patches[2:], boxes[2:])
    covered = torch.zeros(2, *spatial, dtype=torch.bool)
    for b, origin in boxes:
        covered[(b, *(slice(o, o + r) for o, r in zip(origin, roi)))] = True
    held = sum(total.numel() for total, _ in blend.cells.values())
    assert held == C * int(covered.sum()) < C * covered.numel() // 2  # the refined region, not the volume
    logits = blend.result(coarse, downsample)
    assert torch.allclose(logits, _dense_blend(coarse, patches, boxes, spatial, weight, downsample), atol=1e-5)
    assert torch.equal(blend.labels(coarse, downsample), logits.argmax(1, keepdim=True).to(torch.uint8))
    assert torch.equal(blend.labels(coarse, downsample, sigmoid=True), (logits > 0).to(torch.uint8))


def test_blend_with_gradients_gives_the_same_logits_and_the_gradients_of_the_dense_blend():
    """Training joins each slab from pieces (its backward pass copies no slab), inference writes the cells into the
    slab in place: the same logits, bit for bit; the patches get the gradients of the dense aggregation."""
    from e2enet_monai.networks.blocks import PatchAccumulator

    torch.manual_seed(0)
    spatial, roi, downsample = (40, 36, 30), (16, 16, 16), 2
    grid = CandidateGrid.build(spatial, roi, 0.5)
    boxes = [(0, grid.origin(i)) for i in (0, 1, len(grid) - 1)] + [(1, grid.origin(3))]
    weight, coarse = torch.rand(roi) + 0.1, torch.randn(2, C, 20, 18, 15)
    patches = torch.randn(len(boxes), C, *roi)

    def blended(p):
        blend = PatchAccumulator(2, C, spatial, weight, boxes)
        blend.add(p, boxes)
        return blend.result(coarse, downsample)

    with torch.no_grad():
        reference = blended(patches)
    leaf, dense = patches.clone().requires_grad_(), patches.clone().requires_grad_()
    logits = blended(leaf)
    assert torch.equal(logits, reference)
    probe = torch.randn_like(logits)
    (logits * probe).sum().backward()
    (_dense_blend(coarse, dense, boxes, spatial, weight, downsample) * probe).sum().backward()
    assert leaf.grad.abs().sum() > 0 and torch.allclose(leaf.grad, dense.grad, atol=1e-5)


@pytest.mark.parametrize("k", [0, 1, 4, 10**6])
def test_label_output_is_the_argmax_of_the_logits_output(k):
    model = make_model().eval()
    x = torch.rand(2, 1, 37, 40, 29)
    logits, picks = topk_patch_inference(x, model, k=k)
    labels, same = topk_patch_inference(x, model, k=k, output="labels")
    assert [p[0] for p in picks] == [p[0] for p in same]
    assert labels.dtype == torch.uint8 and labels.shape == (2, 1, 37, 40, 29)
    assert torch.equal(labels, logits.argmax(1, keepdim=True).to(torch.uint8))
    sigmoid = make_model(sigmoid=True).eval()
    logits, _ = topk_patch_inference(x, sigmoid, k=k)
    assert torch.equal(TopKPatchInferer(k=k, output="labels")(x, sigmoid), (logits > 0).to(torch.uint8))
    with pytest.raises(ValueError, match="output one of \\('logits', 'labels'\\)"):
        TopKPatchInferer(output="probabilities")
