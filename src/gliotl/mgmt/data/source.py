"""Where a cohort comes from: the one cohort config of `mgmt prepare` and `mgmt run`.

``CohortConfig`` is a union discriminated by ``kind``, one model per kind, so each kind has only
its own keys (a misplaced key is an error, not ignored) and a new kind is one more model in the
union and one more branch in :func:`read_configured`.

Paths are :data:`gliotl.core.config.ConfigPath`: relative to the config file's folder, absolute
once the config is loaded, so a run and its ``--resume`` read the same files from anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from gliotl.core.config import SEED_MAX, ConfigPath, StrictModel
from gliotl.errors import GliotlError
from gliotl.mgmt.data.cohort import Cohort, read_cohort_table, read_rsna
from gliotl.mgmt.data.rsna import DEFAULT_EXCLUDE, read_kaggle_rsna
from gliotl.mgmt.data.upenn import read_upenn

OnMissing = Literal["exclude", "error"]


class UpennCohort(StrictModel):
    """UPenn-GBM as TCIA ships it: ``root`` is the unpack folder, ``UPENN-GBM/`` or
    ``NIfTI-files/``; ``clinical`` defaults to the newest clinical table found beside it.
    ``segmentation``: automated (``automated_segm``) or expert (``images_segm``, 147 patients);
    ``segmentation_fallback``: with expert, use the automated one where a patient has none.
    ``on_missing``: a patient without a required scan is excluded (counted) or stops the read."""

    kind: Literal["upenn"]
    root: ConfigPath
    clinical: ConfigPath | None = None
    segmentation: Literal["automated", "expert"] = "automated"
    segmentation_fallback: bool = False
    on_missing: OnMissing = "exclude"


class RsnaCohort(StrictModel):
    """RSNA-MICCAI 2021 as Kaggle ships it (DICOM, :mod:`gliotl.mgmt.data.rsna`): ``root`` (the
    download or its ``train/``), ``labels`` (default ``train_labels.csv`` beside ``train/``),
    ``exclude`` (default the organisers' 00109, 00123, 00709), the ``reference`` series whose
    field of view the ``grid_spacing`` mm LPS grid covers, where the resampled NIfTI volumes go
    (``converted``, default under ``$GLIOTL_CACHE``) and ``convert_workers`` processes.
    ``on_missing``: a missing series folder stops the read (a Kaggle case always has all four:
    a damaged download) unless ``exclude``, which counts such patients."""

    kind: Literal["rsna"]
    root: ConfigPath
    labels: ConfigPath | None = None
    exclude: list[str | int] = Field(default=list(DEFAULT_EXCLUDE),
                                     description="BraTS21IDs left out")
    reference: Literal["FLAIR", "T1w", "T1wCE", "T2w"] = "T1wCE"
    grid_spacing: float = Field(default=1.0, gt=0, description="mm of the isotropic grid")
    converted: ConfigPath | None = None
    convert_workers: int = Field(default=1, ge=1, description="cases converted in parallel")
    on_missing: OnMissing = "error"


class Brats2021Cohort(StrictModel):
    """BraTS 2021 Task 1 (NIfTI form, ``BraTS2021_<ID>/BraTS2021_<ID>_<suffix>.nii.gz``):
    ``root`` and ``labels`` (Task 2's ``train_labels.csv``)."""

    kind: Literal["brats2021"]
    root: ConfigPath
    labels: ConfigPath
    on_missing: OnMissing = "exclude"


class TableCohort(StrictModel):
    """Any cohort written as a cohort table CSV (see :mod:`gliotl.mgmt.data.cohort`)."""

    kind: Literal["table"]
    table: ConfigPath


class PhantomCohort(StrictModel):
    """A generated phantom in the real UPenn-GBM tree: ``n_patients``, ``shape`` (x, y, z),
    ``signal`` and ``seed``; ``phantom_options`` are further make_phantom_cohort arguments."""

    kind: Literal["phantom"]
    n_patients: int = Field(default=60, ge=4)
    shape: tuple[Annotated[int, Field(ge=16)], Annotated[int, Field(ge=16)],
                 Annotated[int, Field(ge=16)]] = (40, 40, 32)
    signal: float = Field(default=1.0, ge=0.0)
    seed: int = Field(default=0, ge=0, le=SEED_MAX)
    segmentation: Literal["automated", "expert"] = "automated"
    segmentation_fallback: bool = False
    on_missing: OnMissing = "exclude"
    phantom_options: dict[str, Any] = Field(
        default={},
        description="extra keyword arguments of make_phantom_cohort (missing fractions ...)")


CohortConfig = Annotated[UpennCohort | RsnaCohort | Brats2021Cohort | TableCohort | PhantomCohort,
                         Field(discriminator="kind")]
"""Where the patients come from, one model per ``kind``."""


def read_configured(spec: UpennCohort | RsnaCohort | Brats2021Cohort | TableCohort | PhantomCohort,
                    phantom_dir: Path) -> Cohort:
    """Read the configured cohort; a phantom one is generated into ``phantom_dir`` first
    (once: an existing complete phantom is reused)."""
    if isinstance(spec, UpennCohort):
        return read_upenn(spec.root, spec.clinical, spec.segmentation, spec.on_missing,
                          spec.segmentation_fallback)
    if isinstance(spec, RsnaCohort):
        return read_kaggle_rsna(spec.root, spec.labels, [str(e) for e in spec.exclude],
                                spec.reference, spec.grid_spacing, spec.converted,
                                spec.on_missing, spec.convert_workers)
    if isinstance(spec, Brats2021Cohort):
        return read_rsna(spec.root, spec.labels, spec.on_missing)
    if isinstance(spec, TableCohort):
        return read_cohort_table(spec.table)
    from gliotl.mgmt.data.phantom import CLINICAL_NAME, make_phantom_cohort

    if not (phantom_dir / CLINICAL_NAME).is_file():
        make_phantom_cohort(phantom_dir, spec.n_patients, spec.shape, spec.signal, spec.seed,
                            progress=False, resume=True, **spec.phantom_options)
    return read_upenn(phantom_dir, segmentation=spec.segmentation, on_missing=spec.on_missing,
                      segmentation_fallback=spec.segmentation_fallback)


def load_cohort(spec: UpennCohort | RsnaCohort | Brats2021Cohort | TableCohort | PhantomCohort,
                phantom_dir: Path, modalities: list[str] | None = None) -> Cohort:
    """The configured cohort, refused when nothing usable remains: no patient at all, or (given
    the ``modalities`` the run uses) a modality no patient has a file for."""
    cohort = read_configured(spec, phantom_dir)
    check_not_empty(cohort, modalities)
    return cohort


def check_not_empty(cohort: Cohort, modalities: list[str] | None) -> None:
    """One-line errors naming the path pattern searched, instead of a silent empty cohort."""
    where = cohort.source or "cohort"
    if cohort.table.empty:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(cohort.exclusions.items()))
        pattern = cohort.searched.get("T1", "")
        raise GliotlError(f"{where}: 0 patients remain (excluded: {reasons or 'none'})"
                          + (f"; searched {pattern}" if pattern else ""))
    for modality in modalities or []:
        if not cohort.patients_with([modality]):
            pattern = cohort.searched.get(modality, f"column '{modality}'")
            raise GliotlError(f"{where}: modality {modality} matched 0 files for the "
                              f"{len(cohort.table)} patients; searched {pattern}")


def describe(cohort: Cohort, modalities: list[str]) -> list[str]:
    """Per modality: patients found, patients without a file and what happened to them, and
    where the reader looked (what `mgmt prepare` prints)."""
    from gliotl.mgmt.data.upenn import REQUIRED

    lines = []
    kept = len(cohort.table)
    for column in [*modalities, "segmentation"]:
        have = cohort.found.get(column, len(cohort.patients_with([column]))
                                if column != "segmentation" else kept)
        in_cohort = int(cohort.table[column].map(lambda v: isinstance(v, str) and v != "")
                        .sum())
        excluded = cohort.exclusions.get(f"missing {column}", 0)
        text = f"  {column}: {have} labelled patients have a file"
        if column in REQUIRED and excluded:
            text += f"; {excluded} excluded without it"
        elif in_cohort < kept:
            text += f"; {kept - in_cohort} kept without it (optional)"
        searched = cohort.searched.get(column)
        lines.append(text + (f" [searched {searched}]" if searched else ""))
    return lines


__all__ = ["Brats2021Cohort", "CohortConfig", "PhantomCohort", "RsnaCohort", "TableCohort",
           "UpennCohort",
           "check_not_empty", "describe", "load_cohort", "read_configured"]
