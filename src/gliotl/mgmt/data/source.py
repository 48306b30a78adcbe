"""Where a cohort comes from: the one cohort config of `mgmt prepare` and `mgmt run`.

Paths are :data:`gliotl.core.config.ConfigPath`: relative to the config file's folder, absolute
once the config is loaded, so a run and its ``--resume`` read the same files from anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from gliotl.core.config import ConfigPath, StrictModel
from gliotl.mgmt.data.cohort import Cohort, read_cohort_table, read_rsna, read_upenn
from gliotl.mgmt.data.rsna import DEFAULT_EXCLUDE, read_kaggle_rsna

NEEDED = {"upenn": ("root",), "rsna": ("root",), "brats2021": ("root", "labels"),
          "table": ("table",), "phantom": ()}
"""The fields each cohort kind needs."""


class CohortConfig(StrictModel):
    """Where the patients come from.

    ``upenn``: ``root`` (TCIA layout) and optional ``clinical`` table; ``rsna``: RSNA-MICCAI
    2021 as Kaggle ships it (DICOM, :mod:`gliotl.mgmt.data.rsna`): ``root`` (the download or
    its ``train/``), ``labels`` (default ``train_labels.csv`` beside ``train/``), ``exclude``
    (default the organisers' 00109, 00123, 00709), the ``reference`` series whose field of
    view the 1 mm (``grid_spacing``) LPS grid covers, and where the resampled NIfTI volumes go
    (``converted``, default under ``$GLIOTL_CACHE``; ``convert_workers`` processes);
    ``brats2021``: the BraTS 2021 Task 1 NIfTI form, ``root`` and ``labels``; ``table``: a
    cohort table CSV (``table``);
    ``phantom``: generated from ``n_patients``, ``shape`` (x, y, z), ``signal`` and ``seed``.
    ``on_missing``: a patient without a required scan is excluded (counted) or stops the read;
    unset, ``exclude`` except for ``rsna``, where a missing series folder (a Kaggle case always
    has all four) means a damaged download and stops the read.
    """

    kind: Literal["upenn", "rsna", "brats2021", "table", "phantom"]
    root: ConfigPath | None = None
    clinical: ConfigPath | None = None
    segmentation: Literal["automated", "expert"] = "automated"
    labels: ConfigPath | None = None
    exclude: list[str | int] = Field(list(DEFAULT_EXCLUDE), description="rsna: BraTS21IDs left out")
    reference: Literal["FLAIR", "T1w", "T1wCE", "T2w"] = "T1wCE"
    grid_spacing: float = Field(1.0, gt=0, description="rsna: mm of the isotropic grid")
    converted: ConfigPath | None = None
    convert_workers: int = Field(1, ge=1, description="rsna: cases converted in parallel")
    table: ConfigPath | None = None
    on_missing: Literal["exclude", "error"] | None = None
    n_patients: int = Field(60, ge=4)
    shape: tuple[int, int, int] = (40, 40, 32)
    signal: float = Field(1.0, ge=0.0)
    seed: int = 0
    phantom_options: dict[str, Any] = Field(
        {}, description="extra keyword arguments of make_phantom_cohort (missing fractions ...)"
    )

    @model_validator(mode="after")
    def _check_paths(self) -> CohortConfig:
        for key in NEEDED[self.kind]:
            if not getattr(self, key):
                raise ValueError(f"cohort kind '{self.kind}' needs '{key}'")
        if self.on_missing is None:  # the kind's default, concrete once validated
            self.on_missing = "error" if self.kind == "rsna" else "exclude"
        return self


def load_cohort(spec: CohortConfig, phantom_dir: Path) -> Cohort:
    """Read the configured cohort; a phantom one is generated into ``phantom_dir`` first
    (once: an existing phantom with its clinical table is reused)."""
    on_missing = spec.on_missing or "exclude"
    if spec.kind == "upenn":
        return read_upenn(spec.root, spec.clinical, spec.segmentation, on_missing)
    if spec.kind == "rsna":
        return read_kaggle_rsna(
            spec.root, spec.labels, [str(e) for e in spec.exclude], spec.reference,
            spec.grid_spacing, spec.converted, on_missing, spec.convert_workers)
    if spec.kind == "brats2021":
        return read_rsna(spec.root, spec.labels, on_missing)
    if spec.kind == "table":
        return read_cohort_table(spec.table)
    from gliotl.mgmt.data.phantom import CLINICAL_NAME, make_phantom_cohort

    if not (phantom_dir / CLINICAL_NAME).is_file():
        make_phantom_cohort(phantom_dir, spec.n_patients, spec.shape, spec.signal, spec.seed,
                            progress=False, **spec.phantom_options)
    return read_upenn(phantom_dir, segmentation=spec.segmentation,
                      on_missing=on_missing)


__all__ = ["CohortConfig", "load_cohort"]
