"""
DICOM-SEG output of ``e2enet-segment`` (``--output_type dicom_seg``): the label map of a DICOM series case written
as one binary Segmentation object with highdicom, referencing the source series' instances so that PACS viewers
overlay it. The label map is resampled onto the DICOM frames by their own geometry (image position, orientation and
pixel spacing), not by an assumed axis order, so a series in any orientation maps exactly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from e2enet_monai.utils.errors import InputError

__all__ = ["REQUIRED_UIDS", "check_dicom_seg_source", "label_frames", "read_source", "write_dicom_seg"]

# what a DICOM-SEG copies from its source series to be filed beside it and to reference its instances
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")
# a private coding scheme ("99" prefix, DICOM PS3.16 8.2) for the structures, whose names are the bundle's own
CODING_SCHEME = "99E2ENET"


def _highdicom():
    try:
        import highdicom
    except ImportError as e:
        raise InputError("--output_type dicom_seg needs highdicom: pip install highdicom "
                         "(or e2enet-monai[all]).") from e
    return highdicom


def check_dicom_seg_source(files: Sequence[Path]) -> None:
    """
    Refuse, before any work, a source series that a DICOM-SEG cannot reference: highdicom missing, or a file
    without one of :data:`REQUIRED_UIDS` (anonymisation often blanks them).

    Raises:
        InputError: naming the first such file and attribute.
    """
    import pydicom

    _highdicom()
    for path in files:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        missing = [k for k in REQUIRED_UIDS if not str(header.get(k, "") or "")]
        if missing:
            raise InputError(f"--output_type dicom_seg: {path} has no {', '.join(missing)}, which a DICOM-SEG must "
                             f"reference (the series looks anonymised without them); use --output_type nifti or "
                             f"masks for it.")


def read_source(files: Sequence[Path]) -> list:
    """The series' headers (``pydicom.Dataset`` without pixel data), in slice order along the slice normal."""
    import pydicom

    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    normal = np.cross(*np.asarray(datasets[0].ImageOrientationPatient, dtype=np.float64).reshape(2, 3))
    return sorted(datasets, key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, np.float64))))


def label_frames(labels: np.ndarray, affine: np.ndarray, datasets: Sequence) -> np.ndarray:
    """
    The label map sampled at every pixel of every source frame.

    Args:
        labels: ``(X, Y, Z)`` label map whose voxel-to-world ``affine`` is in RAS mm (NIfTI convention).
        affine: 4x4.
        datasets: the source frames' headers (``ImagePositionPatient``, ``ImageOrientationPatient``,
            ``PixelSpacing``, ``Rows``, ``Columns``; patient coordinates are LPS).

    Returns:
        ``(len(datasets), Rows, Columns)`` array of ``labels.dtype``.

    Raises:
        InputError: a frame pixel that is not a voxel centre of the label map (the grids differ).
    """
    to_voxel = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    frames = []
    for d in datasets:
        rows, cols = int(d.Rows), int(d.Columns)
        row_dir, col_dir = np.asarray(d.ImageOrientationPatient, dtype=np.float64).reshape(2, 3)
        dr, dc = (float(v) for v in d.PixelSpacing)  # between rows, between columns
        origin = lps_to_ras @ np.asarray(d.ImagePositionPatient, dtype=np.float64)
        # voxel coordinates of pixel (r, c): v0 + r * step_r + c * step_c
        v0 = to_voxel[:3, :3] @ origin + to_voxel[:3, 3]
        step_r = to_voxel[:3, :3] @ (lps_to_ras @ col_dir * dr)
        step_c = to_voxel[:3, :3] @ (lps_to_ras @ row_dir * dc)
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        coords = v0[:, None, None] + step_r[:, None, None] * r + step_c[:, None, None] * c
        index = np.rint(coords).astype(np.int64)
        off_grid = np.abs(coords - index).max()
        outside = any((index[a] < 0).any() or (index[a] >= labels.shape[a]).any() for a in range(3))
        if off_grid > 1e-3 or outside:
            raise InputError(f"the label map's grid does not match DICOM frame {d.get('SOPInstanceUID', '?')} "
                             f"(largest offset {off_grid:.3g} voxel, outside: {outside}).")
        frames.append(labels[index[0], index[1], index[2]])
    return np.stack(frames)


def write_dicom_seg(path: str | os.PathLike, labels: np.ndarray, affine: np.ndarray, files: Sequence[Path],
                    names: Mapping[int, str], algorithm: str, version: str,
                    colours: np.ndarray | None = None) -> None:
    """
    Write ``labels`` as a binary DICOM-SEG of the series ``files``: one segment per entry of ``names`` (segment
    numbers 1, 2, ... in label order, labelled with the structure names; empty frames omitted), filed in the source
    study and frame of reference, with ``algorithm`` and ``version`` as the automatic algorithm that made it.

    Args:
        path: the ``.dcm`` file to write (atomically: written beside it, then renamed).
        labels: ``(X, Y, Z)`` label map on the series' grid, ``affine`` its RAS voxel-to-world matrix.
        files: the source series' files (checked by :func:`check_dicom_seg_source`).
        names: label value -> structure name of the segments to write.
        algorithm: e.g. the bundle's name; ``version`` its version.
        colours: RGB (0-1) display colour per label value - 1 (rows cycled), for viewers.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    datasets = read_source(files)
    values = sorted(names)
    segment_of = np.zeros(max(int(labels.max()), max(values)) + 1, dtype=np.uint8)
    segment_of[values] = np.arange(1, len(values) + 1)
    frames = segment_of[label_frames(labels, affine, datasets)]
    identification = hd.AlgorithmIdentificationSequence(name=algorithm, version=version,
                                                        family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for number, value in enumerate(values, 1):
        colour = None
        if colours is not None:
            rgb = np.clip(np.rint(np.asarray(colours[(value - 1) % len(colours)]) * 255), 0, 255).astype(int)
            colour = hd.color.CIELabColor.from_rgb(*(int(v) for v in rgb))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=names[value][:64],
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=hd.sr.CodedConcept(value=f"L{value}", scheme_designator=CODING_SCHEME,
                                                       meaning=names[value][:64]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=identification,
            display_color=colour))
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="e2enet-monai",
        manufacturer_model_name=algorithm[:64], software_versions=version, device_serial_number="0",
        series_description=f"{algorithm} segmentation"[:64])
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    seg.save_as(tmp)
    os.replace(tmp, target)
