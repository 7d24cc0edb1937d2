"""The CT training chain samples every organ, small ones as often as large ones; the global network's coarse view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from e2enet_monai.data import write_synthetic
from e2enet_monai.losses import TopKPatchLoss
from e2enet_monai.networks import E2ENet, NMSWNet
from e2enet_monai.transforms import CoarseViewd, ct_transforms


def test_train_crops_centre_on_every_organ_equally(tmp_path):
    raw = write_synthetic("btcv", tmp_path, num_train=1, num_test=0, shape=(96, 96, 40))
    case = {"image": str(next((raw / "RawData/Training/img").glob("*.nii.gz"))),
            "label": str(next((raw / "RawData/Training/label").glob("*.nii.gz")))}
    chain = ct_transforms("train", spacing=(1.5, 1.5, 2.0), intensity_range=(-175, 250), patch_size=(9, 9, 9),
                          num_samples=40, num_classes=14, pos_fraction=0.5, aug_prob=0.0, flip_prob=0.0)
    chain.set_random_state(0)
    centres = []
    for _ in range(10):
        for crop in chain(case):
            assert set(crop) == {"image", "label"} and tuple(crop["image"].shape) == (1, 9, 9, 9)
            centres.append(int(crop["label"][0, 4, 4, 4]))
    counts = np.bincount(centres, minlength=14)
    # half the crops on background/body, the other half spread evenly over the 13 organs (about 15 each), although
    # the liver has over 100 times the voxels of an adrenal gland
    assert 0.4 < counts[0] / len(centres) < 0.6, counts
    assert counts[1:].min() >= 5 and counts[1:].max() <= 35, counts


def test_train_chain_needs_the_number_of_classes():
    with pytest.raises(ValueError, match="num_classes"):
        ct_transforms("train", spacing=(1.5, 1.5, 2.0), intensity_range=(-175, 250), patch_size=(16, 16, 16))


def test_coarse_view_is_exactly_what_the_top_k_model_gives_its_global_network():
    """CoarseViewd (whole-volume pretraining) == NMSWNet.global_forward's input and TopKPatchLoss's coarse label."""
    torch.manual_seed(0)
    glob = E2ENet(3, 1, 3, channels=[4, 8, 16], strides=[1, 2, 2], deep_supervision=False)
    model = NMSWNet(glob, E2ENet(3, 1, 3, channels=[4, 8], strides=[1, 2]), 3, (16, 16, 16), downsample=3,
                    global_divisor=glob.divisor)
    image = torch.rand(1, 1, 37, 50, 29)  # no axis divisible by 3 * 4
    label = torch.randint(0, 3, (1, 1, 37, 50, 29))
    affine = torch.diag(torch.tensor([0.8, 0.8, 2.5, 1.0], dtype=torch.float64))
    out = CoarseViewd(["image", "label"], downsample=3, divisor=glob.divisor)(
        {"image": MetaTensor(image[0], affine=affine), "label": MetaTensor(label[0], affine=affine)})
    seen = []
    glob.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    coarse, _ = model.global_forward(image)
    assert out["image"].shape == seen[0].shape[1:] == (1, 16, 20, 12)  # padded to 48 x 60 x 36, shrunk 3x
    assert torch.allclose(out["image"].as_tensor(), seen[0][0], atol=1e-6)
    expected = TopKPatchLoss(downsample=3).coarse_label(label, model.padded_size(image.shape[2:]), coarse.shape[2:])
    assert torch.equal(out["label"].as_tensor(), expected[0])
    assert out["label"].dtype == label.dtype  # labels are sampled, never averaged
    # world position of voxel 0: the centre of the first 3x3x3 block; voxel size 3x larger
    assert torch.allclose(out["image"].affine, torch.tensor([[2.4, 0, 0, 0.8], [0, 2.4, 0, 0.8], [0, 0, 7.5, 2.5],
                                                             [0, 0, 0, 1]], dtype=torch.float64))


def test_whole_volume_training_chain_ends_in_the_coarse_view(tmp_path):
    raw = write_synthetic("btcv", tmp_path, num_train=1, num_test=0, shape=(96, 96, 40))
    case = {"image": str(next((raw / "RawData/Training/img").glob("*.nii.gz"))),
            "label": str(next((raw / "RawData/Training/label").glob("*.nii.gz")))}
    val = ct_transforms("val", spacing=(1.5, 1.5, 2.0), intensity_range=(-175, 250))(case)
    train = ct_transforms("train", spacing=(1.5, 1.5, 2.0), intensity_range=(-175, 250), patch_size=None,
                          aug_prob=0.0, flip_prob=0.0, downsample=3, divisor=[1, 2, 2])(case)
    full = tuple(val["image"].shape[1:])
    assert tuple(train["image"].shape[1:]) == tuple(-(-n // m) * m // 3 for n, m in zip(full, (3, 6, 6)))
    assert set(torch.unique(train["label"]).tolist()) == set(torch.unique(val["label"]).tolist())  # every organ
