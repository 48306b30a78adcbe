"""Cohort tables: one row per patient with its MGMT label and the path of every modality.

Every reader (UPenn-GBM, RSNA-MICCAI / BraTS 2021) produces the same table, so the experiment
never cares where a cohort came from; any other cohort works by writing that table as CSV:
``patient_id, label, <modality columns...>, segmentation`` (label 1 = Methylated,
0 = Unmethylated; a missing modality is an empty cell; relative paths are resolved against the
CSV's folder).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from gliotl.core.io import read_table, require_columns, write_csv, write_json
from gliotl.errors import GliotlError, input_error
from gliotl.mgmt.data.modalities import BRATS_SUFFIXES, MODALITIES

TABLE_COLUMNS = ["patient_id", "label", *MODALITIES, "segmentation"]
MGMT_VALUES = {"methylated": 1, "unmethylated": 0}
EXCLUDED_VALUES = {"indeterminate": "Indeterminate", "not available": "Not Available"}


def _present(value: object) -> bool:
    return isinstance(value, str) and value != ""


@dataclass
class Cohort:
    """A labelled cohort: the table plus what was left out and why (for the report)."""

    table: pd.DataFrame
    exclusions: dict[str, int] = field(default_factory=dict)
    source: str = ""
    searched: dict[str, str] = field(default_factory=dict)
    """column -> the path pattern the reader searched (named when nothing matched)"""
    found: dict[str, int] = field(default_factory=dict)
    """column -> labelled patients with that file, before missing-file exclusions"""
    notes: dict[str, int] = field(default_factory=dict)
    """other counts worth reporting (which segmentation was used)"""

    def __post_init__(self) -> None:
        for column in TABLE_COLUMNS:
            if column not in self.table.columns:
                self.table[column] = pd.NA
        self.table = self.table.reset_index(drop=True)

    @property
    def patient_ids(self) -> list[str]:
        return self.table["patient_id"].tolist()

    @property
    def labels(self) -> pd.Series:
        return self.table.set_index("patient_id")["label"].astype(int)

    def row(self, patient_id: str) -> pd.Series:
        match = self.table.loc[self.table["patient_id"] == patient_id]
        if match.empty:
            raise GliotlError(f"{self.source or 'cohort'}: patient '{patient_id}' not in cohort")
        return match.iloc[0]

    def modalities_available(self, patient_id: str) -> list[str]:
        row = self.row(patient_id)
        return [m for m in MODALITIES if _present(row[m])]

    def patients_with(self, modalities: list[str] | tuple[str, ...]) -> list[str]:
        """Patients that have every one of ``modalities`` (the experiment's eligible set)."""
        mask = pd.Series(True, index=self.table.index)
        for modality in modalities:
            if modality not in MODALITIES:
                raise GliotlError(f"unknown modality '{modality}': expected one of {MODALITIES}")
            mask &= self.table[modality].map(_present)
        return self.table.loc[mask, "patient_id"].tolist()

    def subset(self, patient_ids: list[str]) -> Cohort:
        keep = self.table["patient_id"].isin(patient_ids)
        return Cohort(self.table.loc[keep].copy(), dict(self.exclusions), self.source,
                      dict(self.searched), dict(self.found), dict(self.notes))


def _exclusions_path(path: Path) -> Path:
    return path.with_name(path.stem + ".exclusions.json")


def write_cohort_table(cohort: Cohort, path: str | Path) -> Path:
    """Write the cohort table (CSV) and, if any, its exclusion counts next to it."""
    path = Path(path)
    write_csv(path, cohort.table[TABLE_COLUMNS])
    if cohort.exclusions or cohort.notes:
        notes = {"notes": cohort.notes} if cohort.notes else {}
        write_json(_exclusions_path(path), {"source": cohort.source, **cohort.exclusions, **notes})
    return path


def read_cohort_table(path: str | Path) -> Cohort:
    """Read a cohort table written by any tool; validates ids, labels and modality columns."""
    path = Path(path)
    frame = read_table(path, dtype=str, keep_default_na=False)
    require_columns(frame, ["patient_id", "label"], path)
    unknown = [c for c in frame.columns if c not in TABLE_COLUMNS]
    if unknown:
        raise input_error(path, unknown[0], f"unknown column; expected among {TABLE_COLUMNS}")
    if frame["patient_id"].duplicated().any():
        dup = frame.loc[frame["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise input_error(path, "patient_id", f"unique ids expected ('{dup}' repeats)")
    bad = frame.loc[~frame["label"].isin(["0", "1"]), "label"]
    if not bad.empty:
        raise input_error(path, "label", f"0 or 1 expected (1 = Methylated), got '{bad.iloc[0]}'")
    frame["label"] = frame["label"].astype(int)
    for column in [*MODALITIES, "segmentation"]:
        if column not in frame.columns:
            frame[column] = pd.NA
            continue
        frame[column] = frame[column].map(
            lambda v: str((path.parent / v).resolve()) if _present(v) else pd.NA
        )
    exclusions: dict[str, int] = {}
    notes: dict[str, int] = {}
    side = _exclusions_path(path)
    if side.is_file():
        data = json.loads(side.read_text(encoding="utf-8"))
        exclusions = {k: int(v) for k, v in data.items() if k not in ("source", "notes")}
        notes = {k: int(v) for k, v in data.get("notes", {}).items()}
    searched = {c: f"{path}: column {c}" for c in TABLE_COLUMNS[2:]}
    found = {c: int(frame[c].map(_present).sum()) for c in TABLE_COLUMNS[2:]}
    return Cohort(frame, exclusions, str(path), searched, found, notes)


def mgmt_label(value: object, source: Path, patient_id: str) -> int | str:
    """1 / 0 for a usable label, else the exclusion reason."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
        return "Not Available"
    text = str(value).strip().lower()
    if text in MGMT_VALUES:
        return MGMT_VALUES[text]
    if text in EXCLUDED_VALUES:
        return EXCLUDED_VALUES[text]
    raise input_error(
        source,
        "MGMT",
        f"Methylated / Unmethylated / Indeterminate / Not Available expected, got '{value}' "
        f"for {patient_id}",
    )


def read_rsna(
    root: str | Path,
    labels_csv: str | Path,
    on_missing: Literal["exclude", "error"] = "exclude",
) -> Cohort:
    """Read RSNA-MICCAI 2021 / BraTS 2021 task 2 in NIfTI form.

    Layout: ``BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair}.nii.gz`` (``_seg`` optional)
    and ``train_labels.csv`` with ``BraTS21ID, MGMT_value``. T1w/T1wCE/T2w/FLAIR become the
    gliotl names T1/T1GD/T2/FLAIR.
    """
    root = Path(root).expanduser().resolve()
    labels_path = Path(labels_csv)
    if not root.is_dir():
        raise input_error(root, None, "BraTS 2021 folder not found")
    frame = read_table(labels_path, dtype=str, keep_default_na=False)
    require_columns(frame, ["BraTS21ID", "MGMT_value"], labels_path)
    exclusions: Counter[str] = Counter()
    rows = []
    for raw_id, value in zip(frame["BraTS21ID"].str.strip(), frame["MGMT_value"], strict=True):
        label = _rsna_label(raw_id, value, labels_path)
        if label is None:
            exclusions["Not Available"] += 1
            continue
        patient_id = f"BraTS2021_{int(raw_id):05d}"
        row = _rsna_row(root / patient_id, patient_id, label)
        missing = [m for m in BRATS_SUFFIXES if pd.isna(row[m])]
        if missing and on_missing == "error":
            raise input_error(root / patient_id, missing[0], f"file missing for {patient_id}")
        if missing:
            exclusions["missing files"] += 1
            continue
        rows.append(row)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    searched = {m: str(root / "BraTS2021_<ID>" / f"BraTS2021_<ID>_{suffix}.nii.gz")
                for m, suffix in {**BRATS_SUFFIXES, "segmentation": "seg"}.items()}
    found = {c: int(table[c].map(_present).sum()) for c in searched}
    return Cohort(table, dict(exclusions), f"rsna:{root}", searched, found)


def _rsna_label(raw_id: str, value: object, labels_path: Path) -> int | None:
    """The MGMT label of one labels row; None when it is blank (not available)."""
    if not raw_id.isdigit():
        raise input_error(labels_path, "BraTS21ID", f"integer id expected, got '{raw_id}'")
    text = str(value).strip()
    if text == "":
        return None
    if text not in ("0", "1"):
        raise input_error(labels_path, "MGMT_value", f"0 or 1 expected, got '{value}'")
    return int(text)


def _rsna_row(folder: Path, patient_id: str, label: int) -> dict[str, object]:
    """One cohort-table row: the BraTS files that exist under the gliotl modality names."""
    row: dict[str, object] = {"patient_id": patient_id, "label": label}
    for modality in MODALITIES:
        row[modality] = pd.NA
    for modality, suffix in BRATS_SUFFIXES.items():
        path = folder / f"{patient_id}_{suffix}.nii.gz"
        row[modality] = str(path) if path.is_file() else pd.NA
    seg = folder / f"{patient_id}_seg.nii.gz"
    row["segmentation"] = str(seg) if seg.is_file() else pd.NA
    return row
