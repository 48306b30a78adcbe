"""Write small RSNA-MICCAI 2021 cohorts exactly as Kaggle ships them (for tests, benchmarks and
users' dry runs): ``train/<BraTS21ID>/{FLAIR,T1w,T1wCE,T2w}/Image-<N>.dcm`` and
``train_labels.csv``.

Each series is sampled from one synthetic head defined in world (LPS) coordinates, so the
series of a patient are NOT co-registered on a voxel grid but agree in the world, as real
acquisitions of one session do. What makes the real data hard is reproduced on purpose: every
series has its own plane (axial, sagittal, coronal), obliquity, field-of-view offset, pixel
spacing and slice count; file numbers ``N`` start anywhere and are shuffled against geometry,
and InstanceNumber is shuffled independently of both; stored values go through a rescale
slope / intercept other than 1 / 0. A bright Gaussian marker sits at one world position per
patient (returned) so a reader can be checked to put it at the same voxel in every modality.

Needs ``pydicom`` (the ``dev`` extra): gliotl itself reads DICOM with SimpleITK only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gliotl.errors import GliotlError

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage SOP class
PLANES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}
"""DICOM ImageOrientationPatient (row direction, column direction) of the usual planes."""
SERIES_NAMES = ("FLAIR", "T1w", "T1wCE", "T2w")


@dataclass(frozen=True)
class SeriesSpec:
    """Geometry and storage of one series.

    ``pixel_spacing`` is DICOM's (between rows, between columns) in mm; ``centre`` the world
    (LPS, mm) centre of the field of view; ``tilt`` degrees of rotation about x, y, z applied to
    the plane's orientation (obliquity).
    """

    rows: int
    cols: int
    slices: int
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    plane: str = "axial"
    tilt: tuple[float, float, float] = (0.0, 0.0, 0.0)
    slope: float = 1.0
    intercept: float = 0.0
    first_number: int = 1


@dataclass(frozen=True)
class Head:
    """The synthetic head in world coordinates: an ellipsoid of tissue with a brighter core,
    and a Gaussian marker (``marker`` mm, ``marker_sigma`` mm) far brighter than any tissue."""

    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radii: tuple[float, float, float] = (28.0, 34.0, 26.0)
    marker: tuple[float, float, float] = (8.0, -6.0, 5.0)
    marker_sigma: float = 2.5
    tissue: dict[str, float] = field(default_factory=lambda: {
        "FLAIR": 300.0, "T1w": 400.0, "T1wCE": 350.0, "T2w": 500.0})

    def values(self, points: np.ndarray, series: str) -> np.ndarray:
        """Intensity at world ``points`` (..., 3) for ``series``."""
        scaled = (points - np.asarray(self.centre)) / np.asarray(self.radii)
        radius = np.sqrt((scaled**2).sum(axis=-1))
        level = self.tissue.get(series, 300.0)
        out = np.where(radius <= 1.0, level, 0.0) + np.where(radius <= 0.6, 0.5 * level, 0.0)
        distance2 = ((points - np.asarray(self.marker)) ** 2).sum(axis=-1)
        return out + 3000.0 * np.exp(-distance2 / (2 * self.marker_sigma**2))


def _rotation(degrees: Sequence[float]) -> np.ndarray:
    ax, ay, az = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def series_geometry(spec: SeriesSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row direction, column direction, normal, position of slice 0's first pixel)."""
    if spec.plane not in PLANES:
        raise GliotlError(f"unknown plane '{spec.plane}': expected one of {list(PLANES)}")
    rotation = _rotation(spec.tilt)
    row, col = (rotation @ np.asarray(v) for v in PLANES[spec.plane])
    normal = np.cross(row, col)
    d_row, d_col = spec.pixel_spacing
    first = (np.asarray(spec.centre) - (spec.cols - 1) / 2 * d_col * row
             - (spec.rows - 1) / 2 * d_row * col - (spec.slices - 1) / 2 * spec.slice_spacing
             * normal)
    return row, col, normal, first


def _dataset(spec: SeriesSpec, uids: dict[str, str], position: np.ndarray,
             orientation: list[float], instance: int, pixels: np.ndarray) -> Any:
    """One MR slice as pydicom writes it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MR_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MR_IMAGE_STORAGE, sop_uid, "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.FrameOfReferenceUID, ds.SeriesDescription = uids["frame"], uids["name"]
    ds.PatientID, ds.InstanceNumber = uids["patient"], instance
    ds.Rows, ds.Columns = spec.rows, spec.cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelSpacing = [float(v) for v in spec.pixel_spacing]
    ds.SliceThickness = float(spec.slice_spacing)
    ds.ImagePositionPatient = [round(float(v), 6) for v in position]
    ds.ImageOrientationPatient = orientation
    ds.RescaleSlope, ds.RescaleIntercept = float(spec.slope), float(spec.intercept)
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def write_series(folder: Path, spec: SeriesSpec, head: Head, name: str, patient: str,
                 rng: np.random.Generator) -> None:
    """Write one series: ``Image-<N>.dcm`` with N shuffled against position, InstanceNumber
    shuffled independently, pixels stored as (value - intercept) / slope."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    row, col, normal, first = series_geometry(spec)
    d_row, d_col = spec.pixel_spacing
    r, c = np.meshgrid(np.arange(spec.rows), np.arange(spec.cols), indexing="ij")
    plane = r[..., None] * d_row * col + c[..., None] * d_col * row  # rows x cols x 3
    uids = {"study": f"1.2.826.0.1.3680043.8.498.{int(patient) + 1}", "series": generate_uid(),
            "frame": f"1.2.826.0.1.3680043.8.498.{int(patient) + 1}.1", "name": name,
            "patient": patient}
    numbers = rng.permutation(spec.slices) + spec.first_number
    instances = rng.permutation(spec.slices) + 1
    orientation = [round(float(v), 8) for v in (*row, *col)]
    for k in range(spec.slices):
        position = first + k * spec.slice_spacing * normal
        values = head.values(position + plane, name)
        stored = np.clip(np.rint((values - spec.intercept) / spec.slope), 0, 65535)
        ds = _dataset(spec, uids, position, orientation, int(instances[k]), stored)
        ds.save_as(folder / f"Image-{int(numbers[k])}.dcm", enforce_file_format=True)


def patient_series(rng: np.random.Generator, scale: float = 1.0) -> dict[str, SeriesSpec]:
    """Four series as different as real ones: planes, tilts, offsets, spacings, slice counts
    and rescale parameters drawn per patient. ``scale`` multiplies the matrix sizes."""

    def size(n: int) -> int:
        return max(4, int(round(n * scale)))

    def triple(limit: float) -> tuple[float, float, float]:
        x, y, z = (float(v) for v in rng.uniform(-limit, limit, 3))
        return x, y, z

    def offset() -> tuple[float, float, float]:
        return triple(4.0)

    def tilt(limit: float) -> tuple[float, float, float]:
        return triple(limit)

    start = int(rng.integers(1, 400))
    return {
        "T1wCE": SeriesSpec(size(36), size(34), size(30), (2.0 / scale, 2.0 / scale),
                            2.2 / scale, offset(), "axial", tilt(12.0), 0.5, -100.0, start),
        "FLAIR": SeriesSpec(size(30), size(32), size(28), (2.4 / scale, 2.3 / scale),
                            2.5 / scale, offset(), "sagittal", tilt(8.0), 2.0, 10.0, start + 7),
        "T1w": SeriesSpec(size(32), size(32), size(12), (2.2 / scale, 2.2 / scale),
                          5.0 / scale, offset(), "axial", tilt(6.0), 1.0, 0.0, 1),
        "T2w": SeriesSpec(size(34), size(30), size(26), (2.1 / scale, 2.1 / scale),
                          2.4 / scale, offset(), "coronal", tilt(10.0), 0.25, 0.0, start + 40),
    }


def write_kaggle_cohort(
    root: str | Path,
    ids: Sequence[int | str] = (0, 2, 3, 5, 6, 8, 9, 11),
    labels: Sequence[int] | None = None,
    seed: int = 0,
    scale: float = 1.0,
    unlabelled: Sequence[int | str] = (),
) -> pd.DataFrame:
    """Write ``root/train/<id>/<series>/Image-N.dcm`` for ``ids`` (plus ``unlabelled`` ids that
    get image folders but no label row) and ``root/train_labels.csv``; returns the truth per
    patient: ``BraTS21ID, MGMT_value, marker_x, marker_y, marker_z`` (world LPS mm)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    labels = list(labels) if labels is not None else [i % 2 for i in range(len(ids))]
    truth = []
    for raw, label in [*zip(ids, labels, strict=True), *((u, None) for u in unlabelled)]:
        patient = f"{int(raw):05d}"
        mx, my, mz = (float(v) for v in rng.uniform(-8.0, 8.0, 3))
        marker = (mx, my, mz)
        head = Head(marker=marker)
        for name, spec in patient_series(rng, scale).items():
            write_series(root / "train" / patient / name, spec, head, name, patient, rng)
        if label is not None:
            truth.append({"BraTS21ID": patient, "MGMT_value": int(label),
                          "marker_x": marker[0], "marker_y": marker[1], "marker_z": marker[2]})
    frame = pd.DataFrame(truth)
    frame[["BraTS21ID", "MGMT_value"]].to_csv(root / "train_labels.csv", index=False)
    return frame


__all__ = [
    "Head",
    "SERIES_NAMES",
    "SeriesSpec",
    "patient_series",
    "series_geometry",
    "write_kaggle_cohort",
    "write_series",
]
