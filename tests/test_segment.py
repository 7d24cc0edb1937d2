"""``e2enet-segment``: the real command in its own process (most through the warm interpreter of ``warm.py``), on the
real DICOM series fixture and on phantoms."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import warm
from bundle_copies import random_weights_copy
from monai.transforms import LoadImage
from PIL import Image

from e2enet_monai.bundle.registry import bundle_path
from e2enet_monai.data import write_synthetic

DICOM = Path(__file__).parent / "data/ct_dicom_series/dicom"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def segment(*args, check=True, timeout=600):
    return warm.run_segment(*args, env=ENV, timeout=timeout, check=check)


def last_line(proc):
    return proc.stderr.strip().splitlines()[-1]


def summary(out):
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {name: random_weights_copy(bundle_path(name), root) for name in ("btcv", "brats")}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """6 small BTCV-layout test images (every third stored in a non-RAS orientation), a little over one network
    patch after resampling."""
    raw = write_synthetic("btcv", tmp_path_factory.mktemp("phantoms"), num_train=0, num_test=6, shape=(96, 96, 32))
    return sorted((raw / "RawData/Testing/img").glob("*.nii.gz"))


def with_uids(folder):
    """A copy of the fixture with the UIDs a scanner writes (its anonymisation blanked study, series and SOP
    instance UIDs; the SOP instance UID is the file meta's, as DICOM requires)."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    for f in sorted(DICOM.iterdir()):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.save_as(folder / f.name)
    return folder


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dicom_series_with_demo_weights_statistics_and_preview(demo, tmp_path):
    """The acceptance run: the real CT series, the BTCV demo bundle; output on MONAI's DICOM grid, statistics
    equal to numpy on the written label map and the input, a preview PNG."""
    _, bundle, _ = demo("btcv")
    out = tmp_path / "out"
    proc = segment("-i", DICOM, "-o", out, "--bundle", bundle, "--statistics", "--preview")
    case = out / "dicom"
    assert sorted(p.name for p in case.iterdir()) == ["dicom_seg.nii.gz", "preview.png", "statistics.json"]
    assert "[1/1] dicom:" in proc.stdout and "inference" in proc.stdout  # per-case line with step timings

    reference = LoadImage(reader="PydicomReader", image_only=True)(str(DICOM))
    seg = nib.load(str(case / "dicom_seg.nii.gz"))
    labels = np.asarray(seg.dataobj)
    assert labels.shape == tuple(reference.shape) == (512, 512, 20)
    assert np.allclose(seg.affine, np.asarray(reference.affine), atol=1e-4)
    assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) - {0}  # the demo net finds something

    stats = json.loads((case / "statistics.json").read_text())
    names = json.loads((bundle / "configs/metadata.json").read_text())["network_data_format"]["outputs"]["pred"][
        "channel_def"]
    assert list(stats) == [names[str(v)] for v in range(1, 14)]
    hu = np.asarray(reference, dtype=np.float64)
    voxel_ml = abs(np.linalg.det(np.asarray(reference.affine)[:3, :3])) / 1000
    assert voxel_ml == pytest.approx(0.9765625 ** 2 * 2 / 1000)
    for value in range(1, 14):
        entry, inside = stats[names[str(value)]], labels == value
        assert entry["label"] == value and entry["voxels"] == int(inside.sum())
        assert entry["volume_ml"] == pytest.approx(inside.sum() * voxel_ml)
        if inside.any():
            assert entry["intensity_mean"] == pytest.approx(hu[inside].mean(), rel=1e-6)
            assert entry["intensity_std"] == pytest.approx(hu[inside].std(), rel=1e-6)
        else:
            assert entry["intensity_mean"] is None and entry["intensity_std"] is None

    with Image.open(case / "preview.png") as png:
        assert png.format == "PNG" and png.size[0] > 600 and png.size[1] > 300
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 10  # an image, not a blank canvas
    rows = summary(out)
    assert [(r["case"], r["status"], r["error"]) for r in rows] == [("dicom", "done", "")]
    assert float(rows[0]["seconds"]) > 0

    # the same series with its UIDs, as a DICOM-SEG: read back by highdicom, one segment per structure, filed in
    # the source study, each source slice's pixels equal to the label map of the same command as NIfTI (both top-k,
    # --fast: a few seconds where sliding window over this CT takes half a minute on one thread)
    import highdicom as hd
    import pydicom

    series = with_uids(tmp_path / "series")
    segment("-i", series, "-o", tmp_path / "seg", "--bundle", bundle, "--fast", "--output_type", "dicom_seg")
    segment("-i", series, "-o", tmp_path / "fast", "--bundle", bundle, "--fast")
    labels = np.asarray(nib.load(str(tmp_path / "fast/series/series_seg.nii.gz")).dataobj)
    assert set(np.unique(labels).tolist()) - {0}
    dcm = hd.seg.segread(tmp_path / "seg/series/series_seg.dcm")
    assert [dcm.get_segment_description(n).segment_label for n in dcm.segment_numbers] == [
        names[str(v)] for v in range(1, 14)]
    sources = sorted((pydicom.dcmread(f, stop_before_pixels=True) for f in series.iterdir()),
                     key=lambda d: float(d.ImagePositionPatient[2]))
    assert dcm.StudyInstanceUID == sources[0].StudyInstanceUID
    assert dcm.SeriesInstanceUID != sources[0].SeriesInstanceUID
    frames = dcm.get_pixels_by_source_instance([d.SOPInstanceUID for d in sources], combine_segments=True,
                                               skip_overlap_checks=True)
    # MONAI's reader: axes (column, row, slice), slices from the highest z down (its affine above: -2 mm)
    assert np.array_equal(frames, labels[:, :, ::-1].transpose(2, 1, 0))


def test_same_labels_as_the_bundle_commands_for_sliding_window_and_fast(demo, tmp_path):
    """One inference pipeline: on a demo test image, the command gives exactly the labels of the demo's own
    ``monai.bundle run`` inference, sliding window and (``--fast``) top-k; ``--k`` reaches the top-k config."""
    work, bundle, _ = demo("btcv")
    image = sorted((work / "data/RawData/Testing/img").glob("*.nii.gz"))[0]
    case = image.name[: -len(".nii.gz")]
    for flags, theirs in (([], "segmentations"), (["--fast"], "segmentations_topk")):
        out = tmp_path / (theirs + "_mine")
        segment("-i", image, "-o", out, "--bundle", bundle, *flags)
        mine = nib.load(str(out / case / f"{case}_seg.nii.gz"))
        reference = nib.load(str(work / theirs / case / f"{case}_seg.nii.gz"))
        assert np.allclose(mine.affine, reference.affine) and mine.shape == reference.shape
        assert np.array_equal(np.asarray(mine.dataobj), np.asarray(reference.dataobj)), flags
    proc = segment("-i", image, "-o", tmp_path / "k0", "--bundle", bundle, "--fast", "--k", "-1", check=False)
    assert proc.returncode == 1 and last_line(proc) == "error: --k -1: the number of refined patches must be 0 or more."


def test_roi_subset_and_one_mask_per_structure(bundles, phantoms, tmp_path):
    """--roi_subset keeps exactly the named structures; --output_type masks writes them as 0/1 files equal to the
    label map's."""
    full, subset = tmp_path / "full", tmp_path / "subset"
    segment("-i", phantoms[0], "-o", full, "--bundle", bundles["btcv"])
    segment("-i", phantoms[0], "-o", subset, "--bundle", bundles["btcv"], "--roi_subset", "liver", "Left_Kidney",
            "--output_type", "masks")
    case = phantoms[0].name[: -len(".nii.gz")]
    labels = np.asarray(nib.load(str(full / case / f"{case}_seg.nii.gz")).dataobj)
    masks = sorted(p.name for p in (subset / case / "masks").iterdir())
    assert masks == ["left_kidney.nii.gz", "liver.nii.gz"]
    for file, value in (("liver.nii.gz", 6), ("left_kidney.nii.gz", 3)):
        mask = nib.load(str(subset / case / "masks" / file))
        assert mask.get_data_dtype() == np.uint8
        assert np.array_equal(np.asarray(mask.dataobj), (labels == value).astype(np.uint8)), file


def test_folder_batch_skips_done_cases_and_leaves_no_partial_output(bundles, phantoms, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in phantoms[:3]:
        shutil.copy(p, folder / p.name)
    out = tmp_path / "out"
    segment("-i", folder, "-o", out, "--bundle", bundles["btcv"])
    cases = [p.name[: -len(".nii.gz")] for p in phantoms[:3]]
    assert sorted(p.name for p in out.iterdir()) == sorted([*cases, "summary.csv"])
    assert [r["status"] for r in summary(out)] == ["done"] * 3

    kept = snapshot(out / cases[0])
    shutil.rmtree(out / cases[1])
    (out / f".{cases[1]}.partial").mkdir()  # what a killed run leaves behind
    (out / f".{cases[1]}.partial" / "half.nii.gz").write_bytes(b"\x1f\x8b")
    proc = segment("-i", folder, "-o", out, "--bundle", bundles["btcv"])
    assert [(r["case"], r["status"]) for r in summary(out)] == [(cases[0], "skipped"), (cases[1], "done"),
                                                                 (cases[2], "skipped")]
    assert f"{cases[0]}: skipped" in proc.stdout
    assert snapshot(out / cases[0]) == kept  # untouched
    assert sorted(p.name for p in out.iterdir()) == sorted([*cases, "summary.csv"])  # no partial folder left


def _torchrun(folder, out, bundle, log):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "e2enet_monai.segment", "-i", str(folder), "-o", str(out), "--bundle", str(bundle)]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV, process_group=0)


def _descendants(pid):
    """Every process below ``pid`` (from /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _wait_gone(pids, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)


def test_torchrun_shards_cases_and_resumes_after_a_kill(bundles, phantoms, tmp_path):
    """6 cases under torchrun with 2 ranks (gloo): each case written once; killed after the first cases and started
    again, the second run does only the rest; rank 0 writes the merged summary."""
    folder = tmp_path / "in"
    folder.mkdir()
    for p in phantoms:
        shutil.copy(p, folder / p.name)
    cases = sorted(p.name[: -len(".nii.gz")] for p in phantoms)
    out = tmp_path / "out"
    with open(tmp_path / "first.log", "w") as log:
        proc = _torchrun(folder, out, bundles["btcv"], log)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if out.is_dir() and sum((out / c).is_dir() for c in cases) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        workers = _descendants(proc.pid)  # torchrun starts each rank in a session of its own
        for pid in [proc.pid, *workers]:  # as a machine that goes down: no clean-up anywhere
            os.kill(pid, signal.SIGKILL)
        proc.wait()
        _wait_gone(workers)
    done_first = {c: snapshot(out / c) for c in cases if (out / c).is_dir()}
    assert 2 <= len(done_first) < 6 and not (out / "summary.csv").exists()

    with open(tmp_path / "second.log", "w") as log:
        proc = _torchrun(folder, out, bundles["btcv"], log)
        assert proc.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    rows = summary(out)
    assert [r["case"] for r in rows] == cases
    assert {r["case"] for r in rows if r["status"] == "skipped"} == set(done_first)
    assert {r["case"] for r in rows if r["status"] == "done"} == set(cases) - set(done_first)
    for c in cases:
        assert (out / c / f"{c}_seg.nii.gz").is_file()
    for c, files in done_first.items():
        assert snapshot(out / c) == files  # not redone
    second = (tmp_path / "second.log").read_text()
    for c in set(cases) - set(done_first):  # each processed once, by one rank
        assert second.count(f"] {c}: ") == 1, second
    assert sorted(p.name for p in out.iterdir()) == sorted([*cases, "summary.csv"])


def _two_series(tmp_path):
    """The fixture's slices split into two series (two SeriesInstanceUIDs) in one folder."""
    import pydicom

    folder = tmp_path / "two_series"
    folder.mkdir()
    for i, f in enumerate(sorted(DICOM.iterdir())):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1" if i % 2 else "1.2.826.0.1.3680043.8.498.2"
        ds.save_as(folder / f.name)
    return folder


def _truncated(tmp_path, phantoms):
    bad = tmp_path / "truncated.nii.gz"
    data = phantoms[0].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _two_d(tmp_path):
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(96, 96, 1)).astype(np.float32), np.eye(4)),
             str(path))
    return path


ERRORS = {
    "no image": (lambda tmp, ph: [tmp / "empty"], "btcv", [], "no image found in"),
    "truncated": (lambda tmp, ph: [_truncated(tmp, ph)], "btcv", [], "cannot be read as NIfTI"),
    "several series": (lambda tmp, ph: [_two_series(tmp)], "btcv", [], "holds 2 DICOM series: "
                       "1.2.826.0.1.3680043.8.498.2 (CT Body 3.0, 10 files); 1.2.826.0.1.3680043.8.498.1 "
                       "(CT Body 3.0, 10 files). Choose one with --series_uid UID."),
    "2-D": (lambda tmp, ph: [_two_d(tmp)], "btcv", [], "is 2-D (shape (96, 96, 1))"),
    "channels": (lambda tmp, ph: [ph[0]], "brats", [], "the bundle expects 4 input channel(s), got 1"),
    "structure": (lambda tmp, ph: [ph[0]], "btcv", ["--roi_subset", "liver", "spleeen"],
                  "unknown structure(s) ['spleeen'] for --roi_subset; this bundle segments: 'spleen', "),
    "output exists": (lambda tmp, ph: [ph[0]], "btcv", [], "exists; pass --overwrite to replace it"),
    "dicom_seg of NIfTI": (lambda tmp, ph: [ph[0]], "btcv", ["--output_type", "dicom_seg"],
                           "--output_type dicom_seg references the source DICOM series, but "),
    "dicom_seg without UIDs": (lambda tmp, ph: [DICOM], "btcv", ["--output_type", "dicom_seg"],
                               "has no StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, SOPClassUID, which a "
                               "DICOM-SEG must reference (the series looks anonymised without them); use "
                               "--output_type nifti or masks for it."),
    "repeated fold": (lambda tmp, ph: [ph[0]], "btcv", ["--folds", "0", "0"],
                      "folds [0, 0] repeats a fold: each fold checkpoint counts once in the average."),
    "k without fast": (lambda tmp, ph: [ph[0]], "btcv", ["--k", "3"], "--k 3 sets the patches that top-k "
                       "inference refines: add --fast, or drop --k (sliding window has no K)."),
    "runtime with fast": (lambda tmp, ph: [ph[0]], "btcv", ["--backend", "openvino", "--fast"],
                          "--backend openvino runs sliding-window inference on CPU: drop --fast and --device cuda, "
                          "or use --backend torch."),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_are_one_line_with_exit_code_and_change_nothing(case, bundles, phantoms, tmp_path, capsys):
    """Each refusal, through the command line's ``main`` in this process (a process per case would spend most of
    its time importing PyTorch); the installed command's exit code and stderr are those of ``main``
    (``test_debug_shows_the_traceback_and_still_ends_with_the_message`` runs the real process)."""
    from e2enet_monai.segment.command import main

    make, bundle, extra, message = ERRORS[case]
    (tmp_path / "empty").mkdir()
    inputs = make(tmp_path, phantoms)
    out = tmp_path / "out"
    if case == "output exists":
        (out / phantoms[0].name[: -len(".nii.gz")]).mkdir(parents=True)
        (out / phantoms[0].name[: -len(".nii.gz")] / "mine.txt").write_text("keep me")
    before = snapshot(tmp_path)
    code = main([str(a) for a in ("-i", *inputs, "-o", out, "--bundle", bundles[bundle], *extra)])
    stderr = capsys.readouterr().err
    last = stderr.strip().splitlines()[-1]
    assert code == 1, stderr[-2000:]
    assert last.startswith("error: ") and message in last, stderr[-2000:]
    assert "Traceback" not in stderr
    assert snapshot(tmp_path) == before  # nothing written, nothing changed
    assert out.exists() == (case == "output exists")


def test_debug_shows_the_traceback_and_still_ends_with_the_message(bundles, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = segment("-i", tmp_path / "empty", "-o", tmp_path / "out", "--bundle", bundles["btcv"], "--debug",
                   check=False)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "no image found in" in last_line(proc)


def test_named_bundle_without_a_copy_says_how_to_get_one(tmp_path, phantoms):
    proc = segment("-i", phantoms[0], "-o", tmp_path / "out", "--bundle", "btcv", "--cache", tmp_path / "cache",
                   check=False)
    assert proc.returncode == 1
    assert last_line(proc) == (f"error: no downloaded copy of e2enet_btcv_segmentation in {tmp_path / 'cache'}: pass "
                               f"--index_url <bundle index URL> to download it, or --bundle <a trained bundle folder> "
                               f"(the demo's, for example).")


def test_brats_channel_files_are_one_case_in_the_bundle_order(tmp_path):
    """Four BraTS files given in any order are one case, ordered T1c, T1, T2, FLAIR by their 2021 or 2023 names;
    a folder of case folders gives one case per folder; a 4-D file is one case."""
    from e2enet_monai.segment import find_cases

    raw = write_synthetic("brats2021", tmp_path / "b21", num_cases=2, shape=(16, 16, 8))
    files = sorted((raw / "BraTS2021_00000").glob("*_[tf]*.nii.gz"))
    assert len(files) == 4
    (case,) = find_cases(list(reversed(files)), in_channels=4)
    assert case.name == "BraTS2021_00000"
    assert [p.name for p in case.images] == [f"BraTS2021_00000_{m}.nii.gz" for m in ("t1ce", "t1", "t2", "flair")]
    folders = find_cases([raw], in_channels=4)
    assert [c.name for c in folders] == ["BraTS2021_00000", "BraTS2021_00001"]
    raw23 = write_synthetic("brats2023", tmp_path / "b23", num_cases=1, shape=(16, 16, 8))
    (case23,) = find_cases(sorted((raw23 / "BraTS-GLI-00000-000").glob("*-t[12]*.nii.gz")), in_channels=4)
    assert [p.name[len("BraTS-GLI-00000-000-"):] for p in case23.images] == [
        "t1c.nii.gz", "t1n.nii.gz", "t2w.nii.gz", "t2f.nii.gz"]
    four_d = tmp_path / "case4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 4), np.float32), np.eye(4)), str(four_d))
    assert [(c.name, c.images) for c in find_cases([four_d], in_channels=4)] == [("case4d", (four_d,))]


def test_dicom_seg_frames_follow_the_source_geometry(tmp_path):
    """Written from a label map made of the image itself (HU thresholds), each DICOM-SEG frame equals the same
    thresholds of its own source slice: the frames follow the series' geometry, whatever the reader's axis order."""
    import highdicom as hd
    import pydicom

    from e2enet_monai.segment.dicom_seg import write_dicom_seg

    series = with_uids(tmp_path / "series")
    image = LoadImage(reader="PydicomReader", image_only=True)(str(series))
    hu = np.asarray(image)
    labels = np.where(hu > 200, 3, np.where(hu > 0, 1, 0)).astype(np.uint8)
    write_dicom_seg(tmp_path / "seg.dcm", labels, np.asarray(image.affine), sorted(series.iterdir()),
                    {1: "soft tissue", 3: "bone", 5: "absent"}, algorithm="test", version="1")
    dcm = hd.seg.segread(tmp_path / "seg.dcm")
    assert [dcm.get_segment_description(n).segment_label for n in dcm.segment_numbers] == [
        "soft tissue", "bone", "absent"]
    for f in sorted(series.iterdir()):
        ds = pydicom.dcmread(f)
        slice_hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        frame = dcm.get_pixels_by_source_instance([ds.SOPInstanceUID], combine_segments=True,
                                                  skip_overlap_checks=True)[0]
        assert np.array_equal(frame, np.where(slice_hu > 200, 2, np.where(slice_hu > 0, 1, 0))), f.name
    assert not list(tmp_path.glob(".*.tmp"))


def test_statistics_per_structure_and_per_channel():
    from e2enet_monai.segment.outputs import label_statistics

    labels = np.zeros((4, 4, 2), np.uint8)
    labels[:2, :2, 0] = 1  # 4 voxels
    image = np.arange(32, dtype=np.float32).reshape(4, 4, 2)
    affine = np.diag([0.5, 2.0, 3.0, 1.0])  # 3 mm^3 per voxel
    stats = label_statistics(labels, image, affine, {1: "a", 2: "b"})
    inside = image[labels == 1].astype(np.float64)
    assert stats["a"] == {"label": 1, "voxels": 4, "volume_ml": pytest.approx(0.012),
                          "intensity_mean": pytest.approx(inside.mean()), "intensity_std": pytest.approx(inside.std())}
    assert stats["b"] == {"label": 2, "voxels": 0, "volume_ml": 0.0, "intensity_mean": None, "intensity_std": None}
    multi = label_statistics(labels, np.stack([image, 2 * image], -1), affine, {1: "a"}, channel_names=["T1", "T2"])
    assert multi["a"]["intensity_mean"] == {"T1": pytest.approx(inside.mean()), "T2": pytest.approx(2 * inside.mean())}


def test_named_bundle_is_downloaded_through_the_index_once_then_used_from_the_cache(bundles, phantoms, tmp_path,
                                                                                   server):
    """--bundle btcv --index_url: the release zip comes from a real HTTP server on 127.0.0.1 (sha256 checked by the
    download), lands in --cache, and segments; the next run uses that copy with no server and no --index_url."""
    from e2enet_monai.release import package_bundle

    site, url = server
    package_bundle(bundles["btcv"], site, base_url=url, index=site / "index.json")
    cache = tmp_path / "cache"
    segment("-i", phantoms[0], "-o", tmp_path / "a", "--bundle", "btcv", "--index_url", f"{url}/index.json",
            "--cache", cache)
    copy = cache / "e2enet_btcv_segmentation"
    assert (copy / "models/model.pt").read_bytes() == (bundles["btcv"] / "models/model.pt").read_bytes()
    for p in site.iterdir():  # the server has nothing left to give
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    segment("-i", phantoms[0], "-o", tmp_path / "b", "--bundle", "btcv", "--cache", cache)
    case = phantoms[0].name[: -len(".nii.gz")]
    assert np.array_equal(np.asarray(nib.load(str(tmp_path / "a" / case / f"{case}_seg.nii.gz")).dataobj),
                          np.asarray(nib.load(str(tmp_path / "b" / case / f"{case}_seg.nii.gz")).dataobj))
