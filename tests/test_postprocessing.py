"""Postprocessing inverts predictions onto the input's own grid, through probabilities or through labels."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from e2enet_monai.transforms import (
    ArgMaxd,
    brats_postprocessing,
    brats_transforms,
    channel_argmax,
    ct_postprocessing,
    ct_transforms,
)

# an LPS-like (non-RAS), anisotropic grid: the inversion must bring predictions back to exactly this grid
AFFINE = np.diag([-0.8, -0.8, 2.5, 1.0])
SHAPE = (60, 52, 18)


def _label_volume() -> np.ndarray:
    """Three boxes (labels 1..3, box 2 and box 3 inside box 1) on ``SHAPE``: boundaries along every axis."""
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[8:50, 6:44, 3:15] = 1
    lab[14:36, 12:30, 5:12] = 2
    lab[38:48, 30:40, 4:11] = 3
    return lab


def _dice(seg: np.ndarray, truth: np.ndarray) -> list[float]:
    return [2.0 * ((seg == c) & (truth == c)).sum() / ((seg == c).sum() + (truth == c).sum()) for c in (1, 2, 3)]


def _ct_case(tmp_path) -> tuple[str, np.ndarray]:
    lab = _label_volume()
    path = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image((80.0 * lab).astype(np.int16), AFFINE), str(path))  # label i shows as 80 i HU
    return str(path), lab


@pytest.mark.parametrize("invert_labels", [False, True])
def test_ct_postprocessing_returns_labels_on_the_input_grid(tmp_path, invert_labels):
    path, truth = _ct_case(tmp_path)
    pre = ct_transforms("infer", spacing=(1.5, 1.5, 2.0), intensity_range=(-175, 250))
    data = pre({"image": path})
    hu = data["image"][0] * 425.0 - 175.0  # back to HU on the network grid: ideal logits from the image itself
    label = torch.clamp(torch.round(hu / 80.0), 0, 3).long()
    data["pred"] = 10.0 * F.one_hot(label, 4).permute(3, 0, 1, 2).float()
    seg = ct_postprocessing(pre, invert_labels=invert_labels)(data)["pred"]

    assert tuple(seg.shape) == (1, *SHAPE) and seg.dtype == torch.uint8
    np.testing.assert_allclose(seg.affine.numpy(), AFFINE, atol=1e-5)
    # only voxels on a box boundary may differ after two resamplings (mean Dice about 0.91-0.94 here); the same
    # labels with any one axis flipped score 0.72 or less
    assert np.mean(_dice(seg[0].numpy(), truth)) > 0.88, _dice(seg[0].numpy(), truth)


def test_label_inversion_agrees_with_probability_inversion(tmp_path):
    path, _ = _ct_case(tmp_path)
    pre = ct_transforms("infer", spacing=(1.5, 1.5, 2.0), intensity_range=(-175, 250))
    data = pre({"image": path})
    torch.manual_seed(0)
    logits = F.interpolate(torch.randn(1, 4, 4, 5, 5), size=tuple(data["image"].shape[1:]), mode="trilinear")[0]
    outs = []
    for invert_labels in (False, True):
        d = dict(data, pred=logits.clone())
        outs.append(ct_postprocessing(pre, invert_labels=invert_labels)(d)["pred"][0].numpy())
    # smooth random logits: the two routes differ only where classes meet
    assert (outs[0] == outs[1]).mean() > 0.9
    assert set(np.unique(outs[1])) <= {0, 1, 2, 3}


@pytest.mark.parametrize("invert_labels", [False, True])
def test_brats_postprocessing_returns_labels_on_the_input_grid(tmp_path, invert_labels):
    lab = _label_volume()
    paths = []
    for c in range(4):
        p = tmp_path / f"m{c}.nii.gz"
        nib.save(nib.Nifti1Image((1.0 + lab).astype(np.float32), AFFINE), str(p))
        paths.append(str(p))
    pre = brats_transforms("infer", spacing=(1.0, 1.0, 1.0))
    data = pre({"image": paths})
    raw = data["image"][0]  # z-scored 1 + label: rescale to the levels 0..3 on the network grid
    level = torch.round((raw - raw.min()) / (raw.max() - raw.min()) * 3).long()
    regions = torch.stack([(level == 1) | (level == 3), level > 0, level == 3])  # TC, WT, ET
    data["pred"] = 20.0 * regions.float() - 10.0
    seg = brats_postprocessing(pre, enhancing_value=3, invert_labels=invert_labels)(data)["pred"]

    assert tuple(seg.shape) == (1, *SHAPE) and seg.dtype == torch.uint8
    np.testing.assert_allclose(seg.affine.numpy(), AFFINE, atol=1e-5)
    # level 1 is TC without ET (necrotic core, 1), level 2 WT only (edema, 2), level 3 ET (3): the label itself
    assert np.mean(_dice(seg[0].numpy(), lab)) > 0.88, _dice(seg[0].numpy(), lab)


def test_channel_argmax_matches_torch_argmax_and_keeps_meta():
    torch.manual_seed(0)
    logits = torch.randint(0, 3, (5, 7, 8, 9)).float()  # small integers: many ties, where the first channel wins
    logits[2, 0, 0, 0] = float("nan")  # a NaN wins, as in torch.argmax
    pred = MetaTensor(logits, affine=torch.diag(torch.tensor([-0.8, -0.8, 2.5, 1.0])), meta={"filename_or_obj": "a"})
    labels = ArgMaxd("pred")({"pred": pred})["pred"]
    assert labels.dtype == torch.uint8 and labels.shape == (1, 7, 8, 9)
    assert torch.equal(labels.as_tensor().long(), torch.argmax(logits, dim=0, keepdim=True))
    assert labels[0, 0, 0, 0] == 2
    assert torch.equal(labels.affine, pred.affine) and labels.meta["filename_or_obj"] == "a"
    from_numpy = channel_argmax(logits.numpy(), torch.int64)  # a MetaTensor, as MONAI's transforms return
    assert isinstance(from_numpy, MetaTensor)
    assert torch.equal(from_numpy.as_tensor(), torch.argmax(logits, dim=0, keepdim=True))
    with pytest.raises(ValueError, match=r"\(C, \*spatial\).*got shape \(4,\)"):
        channel_argmax(torch.zeros(4))
