"""`gliotl mgmt prepare`: read a cohort, preprocess it into the cache, write the cohort table.

The config uses the keys of the experiment config (``cohort``, ``preprocessing``,
``cache_dir``, ``cache_workers``, ``modalities``), so one cohort block serves both commands;
configs/upenn_prepare.yaml is a commented example. Relative paths are relative to the YAML file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from gliotl.core.config import ConfigPath, StrictModel
from gliotl.errors import GliotlError
from gliotl.mgmt.data.cache import FillReport, VolumeCache, default_workers
from gliotl.mgmt.data.cohort import Cohort, write_cohort_table
from gliotl.mgmt.data.modalities import resolve_modalities
from gliotl.mgmt.data.preprocess import PreprocessConfig
from gliotl.mgmt.data.source import CohortConfig, describe, load_cohort


class PrepareConfig(StrictModel):
    """A cohort, how to preprocess it, and where the cache and the cohort table go."""

    cohort: CohortConfig
    preprocessing: PreprocessConfig = Field(default_factory=PreprocessConfig)
    cache_dir: ConfigPath
    cache_workers: int = Field(default_factory=default_workers, ge=1,
                               description="default: the available CPUs, at most 8")
    modalities: list[str] = ["all"]
    on_error: Literal["error", "exclude"] = "exclude"
    cohort_out: ConfigPath | None = Field(None, description="default <cache_dir>/cohort.csv")

    @field_validator("modalities")
    @classmethod
    def _resolve(cls, value: list[str]) -> list[str]:
        try:
            return resolve_modalities(value)
        except GliotlError as exc:  # pydantic turns ValueError into a one-line config error
            raise ValueError(str(exc)) from None


def run_prepare(config: PrepareConfig, progress: bool = True,
                echo: Callable[[str], None] | None = None) -> tuple[Cohort, FillReport, Path]:
    """Fill the cache for every patient and write the (post-exclusion) cohort table; a phantom
    cohort is generated into ``<cache_dir>/cohort`` first. ``echo`` receives what was found per
    modality before the (long) preprocessing starts. An empty cohort, a modality without a
    single file, or no patient surviving preprocessing is a GliotlError."""
    cache_dir = Path(config.cache_dir)
    cohort = load_cohort(config.cohort, cache_dir / "cohort", config.modalities)
    if echo is not None:
        echo(f"{cohort.source}: {len(cohort.table)} patients; excluded: "
             + (", ".join(f"{k} {v}" for k, v in sorted(cohort.exclusions.items())) or "none")
             + "".join(f"; {k} {v}" for k, v in sorted(cohort.notes.items())))
        for line in describe(cohort, config.modalities):
            echo(line)
    cache = VolumeCache(cache_dir, config.preprocessing)
    report = cache.fill(cohort, config.modalities, workers=config.cache_workers,
                        progress=progress, on_error=config.on_error)
    cohort = report.apply(cohort)
    if cohort.table.empty:
        first = next(iter(report.failed.values()), "")
        raise GliotlError(f"{cache_dir}: 0 patients remain after preprocessing (all "
                          f"{len(report.failed)} failed; first: {first})")
    out = Path(config.cohort_out) if config.cohort_out else cache_dir / "cohort.csv"
    write_cohort_table(cohort, out)
    return cohort, report, out


__all__ = ["PrepareConfig", "run_prepare"]
