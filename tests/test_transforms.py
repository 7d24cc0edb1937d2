"""The CT training chain samples every organ, small ones as often as large ones."""

from __future__ import annotations

import numpy as np
import pytest

from e2enet_monai.data import write_synthetic
from e2enet_monai.transforms import ct_transforms


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
