"""RSNA-MICCAI 2021 (BraTS 2021 Task 2) exactly as Kaggle ships it: DICOM series per folder.

Layout (``root`` is the download folder holding ``train/``, or ``train/`` itself)::

    train_labels.csv                               BraTS21ID (5 digits), MGMT_value (0/1)
    train/<BraTS21ID>/{FLAIR,T1w,T1wCE,T2w}/Image-<N>.dcm

The four series of a case are not co-registered (different planes, spacings and slice counts),
so each patient is read with :mod:`gliotl.mgmt.data.dicom` and all four series are resampled
in world coordinates onto ONE grid: 1 mm isotropic (``grid_spacing``), axes along LPS
(identity direction), covering the field of view of the ``reference`` series, by default
T1wCE. Why that grid: T1wCE is the series most teams and the BraTS pipeline anchor on (a
high-resolution 3D acquisition of the whole brain in most cases), and an axis-aligned 1 mm
grid gives every patient the same orientation and voxel size whatever plane or obliquity the
scanner used, which is what the crop boxes, resizing and the MedicalNet backbone downstream
assume (BraTS / SRI-24 volumes are 1 mm, LPS-stored, too).

The resampled volumes are written once as NIfTI in the BraTS 2021 Task 1 naming
(``BraTS2021_<ID>/BraTS2021_<ID>_{t1,t1ce,t2,flair}.nii.gz``, array (x, y, z), LPS-stored like
SRI-24) under ``converted`` with a manifest of the DICOM files they came from; a later read
reuses them while the DICOM files (names, sizes, mtimes) and the grid settings are unchanged.
Every downstream step (preprocessing, cache, predict) then sees an ordinary co-registered
NIfTI cohort.

Patients: labelled IDs that have an image folder, minus the exclusion list (default the
organisers' 00109, 00123, 00709, whose FLAIR series are broken). Labelled IDs without a
folder, folders without a label and excluded IDs are counted in the cohort's exclusions; none
left is an error. A missing series folder is an error naming it (a Kaggle case always has all
four), unless ``on_missing: exclude`` was set, which counts such patients instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from gliotl.core.io import read_json, read_table, require_columns, write_json
from gliotl.errors import GliotlError, input_error
from gliotl.mgmt.data.cohort import TABLE_COLUMNS, Cohort
from gliotl.mgmt.data.modalities import BRATS_SUFFIXES, RSNA_MODALITIES

DEFAULT_EXCLUDE: tuple[str, ...] = ("00109", "00123", "00709")
"""Cases the organisers asked participants to exclude (FLAIR problems)."""
SERIES: tuple[str, ...] = tuple(RSNA_MODALITIES)
"""Series folder names of one case: FLAIR, T1w, T1wCE, T2w."""
CONVERSION_VERSION = 1
"""Bumped whenever the conversion changes what it writes (old conversions are then redone)."""
ID_WIDTH = 5


def normalise_id(value: object, source: Path | str, field: str) -> str:
    """A BraTS21ID as Kaggle writes it, zero-padded to 5 digits (``109`` -> ``00109``)."""
    text = str(value).strip()
    if not text.isdigit() or len(text) > ID_WIDTH:
        raise input_error(source, field, f"BraTS21ID of at most {ID_WIDTH} digits expected, "
                          f"got '{value}' (quote IDs with leading zeros in YAML)")
    return text.zfill(ID_WIDTH)


def locate(root: str | Path, labels: str | Path | None) -> tuple[Path, Path]:
    """``(train folder, labels CSV)``: ``root`` may be the download folder or ``train/``; the
    labels default to ``train_labels.csv`` beside ``train/``."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise input_error(root, "root", "RSNA-MICCAI folder not found")
    train = root / "train" if (root / "train").is_dir() else root
    if not any(_patient_folders(train)):
        hint = ""
        if any(p.name.startswith("BraTS2021_") for p in train.iterdir()):
            hint = " (this is the BraTS 2021 Task 1 NIfTI form: use cohort kind 'brats2021')"
        raise input_error(train, "root", "no case folders train/<5-digit BraTS21ID>/ found"
                          + hint)
    labels_path = Path(labels) if labels is not None else train.parent / "train_labels.csv"
    if not labels_path.is_file():
        raise input_error(labels_path, "labels", "labels CSV not found (Kaggle's "
                          "train_labels.csv, columns BraTS21ID, MGMT_value)")
    return train, labels_path


def _patient_folders(train: Path) -> Iterable[Path]:
    return (p for p in sorted(train.iterdir())
            if p.is_dir() and p.name.isdigit() and len(p.name) == ID_WIDTH)


def read_labels(path: Path) -> dict[str, int]:
    """``train_labels.csv`` -> {5-digit ID: 0/1}; a missing column, a repeated ID or a label
    other than 0 / 1 is an error naming the file."""
    frame = read_table(path, dtype=str, keep_default_na=False)
    require_columns(frame, ["BraTS21ID", "MGMT_value"], path)
    labels: dict[str, int] = {}
    for raw_id, value in zip(frame["BraTS21ID"], frame["MGMT_value"], strict=True):
        patient = normalise_id(raw_id, path, "BraTS21ID")
        text = str(value).strip()
        if text not in ("0", "1"):
            raise input_error(path, "MGMT_value", f"0 or 1 expected (1 = methylated), got "
                              f"'{value}' for {patient}")
        if patient in labels:
            raise input_error(path, "BraTS21ID", f"unique IDs expected ('{patient}' repeats)")
        labels[patient] = int(text)
    return labels


@dataclass(frozen=True)
class Case:
    """One labelled patient with its four series folders."""

    patient: str
    label: int
    folders: dict[str, Path]

    @property
    def patient_id(self) -> str:
        return f"BraTS2021_{self.patient}"


def find_cases(train: Path, labels: dict[str, int], exclude: Iterable[str],
               on_missing: Literal["exclude", "error"]) -> tuple[list[Case], Counter[str]]:
    """The cases to read and the counts of everything left out, by reason."""
    excluded = {normalise_id(e, "cohort", "exclude") for e in exclude}
    folders = {p.name: p for p in _patient_folders(train)}
    counts: Counter[str] = Counter()
    counts["exclusion list"] = len(excluded & (set(labels) | set(folders)))
    counts["label without image folder"] = len(set(labels) - set(folders) - excluded)
    counts["image folder without label"] = len(set(folders) - set(labels) - excluded)
    cases = []
    for patient in sorted(set(labels) & set(folders) - excluded):
        series = {name: folders[patient] / name for name in SERIES}
        missing = [name for name, folder in series.items() if not folder.is_dir()]
        if missing and on_missing == "error":
            raise input_error(series[missing[0]], None, f"series folder missing (a case has "
                              f"{', '.join(SERIES)})")
        if missing:
            counts[f"missing {missing[0]} series"] += 1
            continue
        cases.append(Case(patient, labels[patient], series))
    return cases, Counter({k: v for k, v in counts.items() if v})


def _cache_home() -> Path:
    env = os.environ.get("GLIOTL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gliotl"


def default_converted_dir(train: Path, reference: str, grid_spacing: float) -> Path:
    """Where converted volumes go when ``converted`` is not set: under ``$GLIOTL_CACHE``
    (default ``~/.cache/gliotl``), one folder per download and grid, so ``mgmt prepare`` and
    ``mgmt run`` share them and Kaggle's read-only input folder is never written to."""
    key = hashlib.sha256(f"{train}|{reference}|{grid_spacing}".encode()).hexdigest()[:12]
    return _cache_home() / "rsna_nifti" / key


def _sources(case: Case) -> dict[str, list[list[object]]]:
    """What identifies the DICOM input of a case: every file's name, size and mtime."""
    sources = {}
    for name, folder in case.folders.items():
        entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                         for e in os.scandir(folder) if e.is_file())
        sources[name] = [list(e) for e in entries]
    return sources


def _outputs(folder: Path, patient_id: str) -> dict[str, Path]:
    return {RSNA_MODALITIES[name]: folder / f"{patient_id}_{BRATS_SUFFIXES[RSNA_MODALITIES[name]]}"
            ".nii.gz" for name in SERIES}


def convert_case(case: Case, out_dir: Path, reference: str, grid_spacing: float) -> dict[str, Path]:
    """Read, check and resample one case onto its reference grid and write it as NIfTI (once:
    an up-to-date conversion is reused); returns {gliotl modality: NIfTI path}."""
    from gliotl.mgmt.data.dicom import read_coregistered, write_nifti

    target = out_dir / case.patient_id
    outputs = _outputs(target, case.patient_id)
    manifest = {"version": CONVERSION_VERSION, "reference": reference,
                "grid_spacing": grid_spacing, "sources": _sources(case)}
    manifest_path = target / "manifest.json"
    if manifest_path.is_file() and all(p.is_file() for p in outputs.values()):
        if read_json(manifest_path) == manifest:
            return outputs
    images, _ = read_coregistered(case.folders, reference, grid_spacing)
    staging = out_dir / f".{case.patient_id}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for name, image in images.items():
        write_nifti(image, staging / outputs[RSNA_MODALITIES[name]].name)
    write_json(staging / "manifest.json", manifest)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return outputs


def _convert_all(cases: list[Case], out_dir: Path, reference: str, grid_spacing: float,
                 workers: int) -> list[dict[str, Path]]:
    """:func:`convert_case` for every case, in order; the first error stops the read."""
    if workers <= 1 or len(cases) <= 1:
        return [convert_case(case, out_dir, reference, grid_spacing) for case in cases]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    convert = partial(convert_case, out_dir=out_dir, reference=reference,
                      grid_spacing=grid_spacing)
    with ProcessPoolExecutor(min(workers, len(cases)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(convert, cases))


def read_kaggle_rsna(
    root: str | Path,
    labels: str | Path | None = None,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    reference: str = "T1wCE",
    grid_spacing: float = 1.0,
    converted: str | Path | None = None,
    on_missing: Literal["exclude", "error"] = "error",
    workers: int = 1,
) -> Cohort:
    """Read RSNA-MICCAI 2021 as downloaded from Kaggle into a cohort of co-registered NIfTI
    volumes (see the module docstring for the grid, the exclusions and the errors); ``workers``
    processes convert cases in parallel (reading a series is single-threaded in ITK)."""
    if reference not in SERIES:
        raise GliotlError(f"cohort: field 'reference': one of {', '.join(SERIES)} expected, "
                          f"got '{reference}'")
    train, labels_path = locate(root, labels)
    cases, counts = find_cases(train, read_labels(labels_path), exclude, on_missing)
    if not cases:
        left = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items())) or "none"
        raise input_error(train, None, f"0 patients remain (cases searched as "
                          f"train/<5-digit BraTS21ID>/{{{','.join(SERIES)}}}/*.dcm, labels "
                          f"from {labels_path}; left out: {left})")
    out_dir = (Path(converted).expanduser().resolve() if converted is not None
               else default_converted_dir(train, reference, grid_spacing))
    rows = []
    for case, paths in zip(cases, _convert_all(cases, out_dir, reference, grid_spacing,
                                               workers), strict=True):
        rows.append({"patient_id": case.patient_id, "label": case.label,
                     **{m: str(p) for m, p in paths.items()}})
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return Cohort(table, dict(counts), f"rsna:{train}")


__all__ = [
    "DEFAULT_EXCLUDE",
    "SERIES",
    "Case",
    "convert_case",
    "default_converted_dir",
    "find_cases",
    "locate",
    "normalise_id",
    "read_kaggle_rsna",
    "read_labels",
]
