"""UPenn-GBM exactly as TCIA ships it (docs: real-data-layouts.md).

The download unpacks to ``<download>/UPENN-GBM/NIfTI-files/<image folders>`` with the clinical
CSVs beside ``UPENN-GBM/``. ``root`` may be any of those three levels. Files are found by their
exact name wherever they sit below their image folder (the DTI folder is nested
``images_DTI/images_DTI/<ID>/`` in the download, and the depth is not settled), skipping the
stale ``old/`` copies and the ``_unstripped`` images; a name found twice is an error naming both
paths, because picking one silently could train on the stale copy.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from gliotl.core.io import read_table, require_columns
from gliotl.errors import input_error
from gliotl.mgmt.data.cohort import TABLE_COLUMNS, Cohort, mgmt_label
from gliotl.mgmt.data.modalities import UPENN_FILES

UPENN_DIR = "UPENN-GBM"
NIFTI_DIR = "NIfTI-files"
SEGMENTATION_FILES: dict[str, tuple[str, str]] = {
    "automated": ("automated_segm", "automated_approx_segm"),
    "expert": ("images_segm", "segm"),
}
IMAGE_FOLDERS = tuple(dict.fromkeys(
    [folder for folder, _ in UPENN_FILES.values()]
    + [folder for folder, _ in SEGMENTATION_FILES.values()]))
REQUIRED = ("T1", "T1GD", "T2", "FLAIR", "segmentation")
"""Columns a patient must have; DTI and DSC are optional (many real patients lack them)."""
SKIPPED_FOLDERS = {"old"}
CLINICAL_PATTERN = "UPENN-GBM_clinical_info_v*.csv"


def find_image_root(root: Path) -> Path:
    """The folder holding the image folders: ``root`` itself, its ``NIfTI-files/`` or its
    ``UPENN-GBM/NIfTI-files/`` (the unpack folder, ``UPENN-GBM/`` or ``NIfTI-files/``)."""
    candidates = [root, root / NIFTI_DIR, root / UPENN_DIR / NIFTI_DIR]
    for candidate in candidates:
        if any((candidate / folder).is_dir() for folder in IMAGE_FOLDERS):
            return candidate
    raise input_error(
        root, None,
        f"no UPenn-GBM image folders ({', '.join(IMAGE_FOLDERS)}) in it, in {NIFTI_DIR}/ or "
        f"in {UPENN_DIR}/{NIFTI_DIR}/: point root at the unpacked TCIA download",
    )


def find_clinical_table(root: Path, image_root: Path | None = None) -> Path:
    """The newest ``UPENN-GBM_clinical_info_v*.csv`` beside or inside ``root`` (TCIA keeps it
    beside ``UPENN-GBM/``, two levels above the images); v2.1 preferred over v1.0."""
    folders = [root, root.parent]
    if image_root is not None:
        folders += [image_root, image_root.parent, image_root.parent.parent]
    found: list[tuple[tuple[int, ...], int, Path]] = []
    for order, folder in enumerate(dict.fromkeys(folders)):
        for candidate in folder.glob(CLINICAL_PATTERN):
            match = re.search(r"_v([0-9.]+)\.csv$", candidate.name)
            if match:
                version = tuple(int(p) for p in match.group(1).split(".") if p.isdigit())
                found.append((version, -order, candidate))
    if not found:
        raise input_error(root, "clinical", f"no {CLINICAL_PATTERN} found in it or beside it; "
                                            "pass the clinical table")
    return max(found)[2]


@dataclass
class FileIndex:
    """Every ``.nii.gz`` below one image folder, by exact file name (``old/`` and
    ``_unstripped`` skipped)."""

    folder: Path
    files: dict[str, list[Path]]

    @classmethod
    def build(cls, folder: Path) -> FileIndex:
        files: dict[str, list[Path]] = {}
        if folder.is_dir():
            for current, dirs, names in os.walk(folder):
                dirs[:] = sorted(d for d in dirs if d.lower() not in SKIPPED_FOLDERS)
                for name in names:
                    if name.endswith(".nii.gz") and "_unstripped" not in name:
                        files.setdefault(name, []).append(Path(current) / name)
        return cls(folder, files)

    def find(self, name: str) -> Path | None:
        """The one file called ``name``; two of them is an error naming both."""
        paths = self.files.get(name, [])
        if len(paths) > 1:
            raise input_error(paths[1], None, f"duplicate of {paths[0]}: remove one copy "
                                              "(gliotl will not guess which is current)")
        return paths[0] if paths else None

    def pattern(self, suffix: str) -> str:
        return str(self.folder / "**" / f"<ID>_{suffix}.nii.gz")


def read_upenn(
    root: str | Path,
    clinical: str | Path | None = None,
    segmentation: Literal["automated", "expert"] = "automated",
    on_missing: Literal["exclude", "error"] = "exclude",
    segmentation_fallback: bool = False,
) -> Cohort:
    """Read UPenn-GBM in its TCIA layout.

    Pre-operative scans (``_11``) with a Methylated / Unmethylated label are kept. Structural
    scans and a segmentation are required; DTI and DSC are optional per patient (many lack
    them), so a missing one is an empty cell. ``segmentation_fallback`` (with ``expert``) uses
    the automated segmentation where a patient has no expert one; the cohort's ``notes`` count
    which was used. Indeterminate, Not Available, ``_21`` follow-ups and patients without a
    required file are excluded and counted by reason.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise input_error(root, None, "UPenn-GBM folder not found")
    if segmentation not in SEGMENTATION_FILES:
        raise input_error(root, "segmentation", "'automated' or 'expert' expected")
    image_root = find_image_root(root)
    clinical_path = Path(clinical) if clinical is not None else \
        find_clinical_table(root, image_root)
    frame = _read_clinical(clinical_path)
    reader = _Reader(image_root, segmentation, segmentation_fallback)
    exclusions: Counter[str] = Counter()
    found: Counter[str] = Counter()
    rows = []
    for patient_id, mgmt in zip(frame["ID"].str.strip(), frame["MGMT"], strict=True):
        label = "follow-up _21" if patient_id.endswith("_21") else \
            mgmt_label(mgmt, clinical_path, patient_id)
        if isinstance(label, str):
            exclusions[label] += 1
            continue
        row = reader.row(patient_id, label)
        found.update(c for c in [*UPENN_FILES, "segmentation"] if not pd.isna(row[c]))
        missing = [m for m in REQUIRED if pd.isna(row[m])]
        if missing and on_missing == "error":
            raise input_error(reader.searched[missing[0]].replace("<ID>", patient_id), None,
                              f"file missing for {patient_id} (required: {missing[0]})")
        if missing:
            exclusions[f"missing {missing[0]}"] += 1
            continue
        reader.count_segmentation(row)
        rows.append(row)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return Cohort(table, dict(exclusions), f"upenn:{root}", searched=dict(reader.searched),
                  found={c: found[c] for c in reader.searched}, notes=dict(reader.used))


def _read_clinical(path: Path) -> pd.DataFrame:
    """The UPenn-GBM clinical table (``ID``, ``MGMT``), one row per scan id."""
    frame = read_table(path, dtype=str, keep_default_na=False)
    require_columns(frame, ["ID", "MGMT"], path)
    if frame["ID"].duplicated().any():
        dup = frame.loc[frame["ID"].duplicated(), "ID"].iloc[0]
        raise input_error(path, "ID", f"unique patient ids expected ('{dup}' repeats)")
    return frame


class _Reader:
    """File indexes of the image folders and which segmentation each patient got."""

    def __init__(self, image_root: Path, segmentation: str, fallback: bool) -> None:
        self.indexes = {folder: FileIndex.build(image_root / folder) for folder in IMAGE_FOLDERS}
        self.segmentation = segmentation
        self.fallback = fallback and segmentation == "expert"
        self.searched = {m: self.indexes[folder].pattern(suffix)
                         for m, (folder, suffix) in UPENN_FILES.items()}
        folder, suffix = SEGMENTATION_FILES[segmentation]
        self.searched["segmentation"] = self.indexes[folder].pattern(suffix)
        if self.fallback:
            folder, suffix = SEGMENTATION_FILES["automated"]
            self.searched["segmentation"] += f" (else {self.indexes[folder].pattern(suffix)})"
        self.used: Counter[str] = Counter()

    def _find(self, folder: str, name: str) -> object:
        path = self.indexes[folder].find(name)
        return str(path) if path is not None else pd.NA

    def row(self, patient_id: str, label: int) -> dict[str, object]:
        """One cohort-table row: the patient's files that exist (missing ones empty)."""
        row: dict[str, object] = {"patient_id": patient_id, "label": label}
        for modality, (folder, suffix) in UPENN_FILES.items():
            row[modality] = self._find(folder, f"{patient_id}_{suffix}.nii.gz")
        folder, suffix = SEGMENTATION_FILES[self.segmentation]
        row["segmentation"] = self._find(folder, f"{patient_id}_{suffix}.nii.gz")
        if self.fallback and pd.isna(row["segmentation"]):
            folder, suffix = SEGMENTATION_FILES["automated"]
            row["segmentation"] = self._find(folder, f"{patient_id}_{suffix}.nii.gz")
        return row

    def count_segmentation(self, row: dict[str, object]) -> None:
        path = str(row["segmentation"])
        kind = "automated" if "_automated_approx_segm" in Path(path).name else "expert"
        self.used[f"segmentation {kind}"] += 1


__all__ = ["find_clinical_table", "find_image_root", "read_upenn"]
