"""`gliotl mgmt prepare`: read a cohort, preprocess it into the cache, write the cohort table.

Config (YAML; relative paths are relative to the YAML file)::

    cohort:
      format: upenn            # upenn | rsna | table
      root: data/UPENN-GBM     # upenn / rsna folder
      clinical: null           # upenn: auto-detects UPENN-GBM_clinical_info_v*.csv
      labels_csv: null         # rsna: train_labels.csv
      table: null              # table: a cohort CSV written by any tool
      segmentation: automated  # upenn: automated | expert
      on_missing: exclude      # exclude | error
    preprocess: {preset: medicalnet}   # or schmitz2024, plus any PreprocessConfig key
    cache_dir: cache
    workers: 2
    modalities: [all]          # names or groups (struct, dti, dsc)
    on_error: exclude          # a failing patient: exclude (reported) | error (stop)
    cohort_out: null           # default <cache_dir>/cohort.csv
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator

from gliotl.core.config import StrictModel
from gliotl.mgmt.data.cache import FillReport, VolumeCache
from gliotl.mgmt.data.cohort import (
    Cohort,
    read_cohort_table,
    read_rsna,
    read_upenn,
    write_cohort_table,
)
from gliotl.mgmt.data.modalities import resolve_modalities
from gliotl.mgmt.data.preprocess import PreprocessConfig


class CohortSource(StrictModel):
    """Where a cohort comes from; ``load_cohort`` turns it into a Cohort."""

    format: Literal["upenn", "rsna", "table"]
    root: Path | None = None
    clinical: Path | None = None
    labels_csv: Path | None = None
    table: Path | None = None
    segmentation: Literal["automated", "expert"] = "automated"
    on_missing: Literal["exclude", "error"] = "exclude"

    @model_validator(mode="after")
    def _check(self) -> CohortSource:
        needed = {"upenn": ["root"], "rsna": ["root", "labels_csv"], "table": ["table"]}
        for key in needed[self.format]:
            if getattr(self, key) is None:
                raise ValueError(f"'{key}' is required for format '{self.format}'")
        return self

    def resolved(self, base: Path) -> CohortSource:
        """Paths made absolute against ``base`` (the config file's folder)."""
        updates = {}
        for key in ("root", "clinical", "labels_csv", "table"):
            value = getattr(self, key)
            if value is not None and not value.is_absolute():
                updates[key] = (base / value).resolve()
        return self.model_copy(update=updates)


def load_cohort(source: CohortSource) -> Cohort:
    if source.format == "upenn":
        return read_upenn(source.root, source.clinical, source.segmentation, source.on_missing)
    if source.format == "rsna":
        return read_rsna(source.root, source.labels_csv, source.on_missing)
    return read_cohort_table(source.table)


class PrepareConfig(StrictModel):
    cohort: CohortSource
    preprocess: PreprocessConfig = PreprocessConfig()
    cache_dir: Path
    workers: int = 1
    modalities: list[str] = ["all"]
    on_error: Literal["error", "exclude"] = "exclude"
    cohort_out: Path | None = None

    def resolved(self, base: Path) -> PrepareConfig:
        def absolute(path: Path | None) -> Path | None:
            return None if path is None or path.is_absolute() else (base / path).resolve()

        return self.model_copy(update={
            "cohort": self.cohort.resolved(base),
            "cache_dir": absolute(self.cache_dir) or self.cache_dir,
            "cohort_out": absolute(self.cohort_out) or self.cohort_out,
        })


def run_prepare(config: PrepareConfig, progress: bool = True) -> tuple[Cohort, FillReport, Path]:
    """Fill the cache for every patient and write the (post-exclusion) cohort table."""
    cohort = load_cohort(config.cohort)
    modalities = resolve_modalities(config.modalities)
    cache = VolumeCache(config.cache_dir, config.preprocess)
    report = cache.fill(cohort, modalities, workers=config.workers, progress=progress,
                        on_error=config.on_error)
    cohort = report.apply(cohort)
    out = config.cohort_out or config.cache_dir / "cohort.csv"
    write_cohort_table(cohort, out)
    return cohort, report, out
