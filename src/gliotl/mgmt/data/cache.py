"""A content-keyed cache of preprocessed volumes, filled in parallel and read memory-mapped.

Each (patient, modality) volume is stored once as float16 ``.npy`` under a key that hashes the
identity of every input file (path + size + mtime_ns, or the content hash) and the
preprocessing config, so changing either makes a new entry instead of silently reusing a stale
one. Entries are written atomically: an interrupted ``fill`` resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from gliotl.core.io import atomic_path, write_json
from gliotl.errors import GliotlError
from gliotl.mgmt.data.cohort import Cohort
from gliotl.mgmt.data.modalities import MODALITIES
from gliotl.mgmt.data.preprocess import (
    PreprocessConfig,
    file_identity,
    input_files,
    preprocess_patient,
)

CACHE_VERSION = 1


@dataclass
class FillReport:
    """What ``VolumeCache.fill`` did: patients processed, already cached, and failed (+why)."""

    processed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def apply(self, cohort: Cohort) -> Cohort:
        """The cohort without failed patients, their number counted as an exclusion."""
        if not self.failed:
            return cohort
        kept = [p for p in cohort.patient_ids if p not in self.failed]
        out = cohort.subset(kept)
        counts = Counter(out.exclusions)
        counts["preprocessing failed"] += len(self.failed)
        out.exclusions = dict(counts)
        return out


def _row_dict(row: Any) -> dict[str, Any]:
    data = dict(row)
    return {k: (None if (not isinstance(v, str) and pd.isna(v)) else v) for k, v in data.items()}


DEFAULT_MAX_WORKERS = 8
"""Bound on the default preprocessing workers (each holds a few full-size volumes in memory)."""


def default_workers() -> int:
    """The CPUs this process may use, at most DEFAULT_MAX_WORKERS: the default of
    ``mgmt prepare``. Outputs do not depend on the worker count (each patient is written by
    one worker, from its own files only)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, DEFAULT_MAX_WORKERS))


class VolumeCache:
    """Preprocessed volumes on disk; ``load`` returns a read-only float16 memory map."""

    def __init__(
        self, root: str | Path, config: PreprocessConfig, content_hash: bool = False
    ) -> None:
        self.root = Path(root)
        self.config = config
        self.content_hash = content_hash
        self._fingerprint = config.fingerprint()

    # -- keys and paths
    def key(self, row: Any, modality: str) -> str:
        row = _row_dict(row)
        if modality not in MODALITIES:
            raise GliotlError(f"unknown modality '{modality}'")
        if not row.get(modality):
            raise GliotlError(f"patient {row['patient_id']}: no {modality} file in the cohort")
        payload = {
            "version": CACHE_VERSION,
            "modality": modality,
            "inputs": [
                file_identity(p, self.content_hash)
                for p in input_files(row, modality, self.config)
            ],
            "config": self._fingerprint,
        }
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def path_for_key(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def path(self, row: Any, modality: str) -> Path:
        return self.path_for_key(self.key(row, modality))

    def has(self, row: Any, modality: str) -> bool:
        return self.path(row, modality).is_file()

    # -- reading and writing
    def put(self, row: Any, modality: str, volume: np.ndarray) -> Path:
        """Store one volume (as float16) atomically."""
        path = self.path(row, modality)
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.save(handle, np.asarray(volume, dtype=np.float16))
        return path

    def load_key(self, key: str) -> np.ndarray:
        path = self.path_for_key(key)
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise GliotlError(
                f"{path}: cache entry missing; run `gliotl mgmt prepare` for this config first"
            ) from None
        except ValueError as exc:
            raise GliotlError(f"{path}: damaged cache entry ({exc}); delete it and re-run "
                              "`gliotl mgmt prepare`") from None

    def load(self, row: Any, modality: str) -> np.ndarray:
        return self.load_key(self.key(row, modality))

    # -- filling
    def missing(self, cohort: Cohort, modalities: list[str] | None = None) -> dict[str, list[str]]:
        """patient -> modalities still to compute (only those the patient has)."""
        todo: dict[str, list[str]] = {}
        for _, row in cohort.table.iterrows():
            row = _row_dict(row)
            wanted = [m for m in (modalities or MODALITIES) if row.get(m)]
            absent = [m for m in wanted if not self.has(row, m)]
            if absent:
                todo[row["patient_id"]] = absent
        return todo

    def fill(
        self,
        cohort: Cohort,
        modalities: list[str] | None = None,
        workers: int = 1,
        progress: bool = True,
        on_error: Literal["error", "exclude"] = "error",
    ) -> FillReport:
        """Compute every missing entry. ``on_error="exclude"`` reports failing patients in the
        returned FillReport instead of stopping; either way a worker's failure surfaces as a
        one-line GliotlError message naming the patient and file."""
        if on_error not in ("error", "exclude"):
            raise GliotlError(f"on_error must be 'error' or 'exclude', got '{on_error}'")
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.root / "config.json", json.loads(self._fingerprint))
        todo = self.missing(cohort, modalities)
        report = FillReport(skipped=[p for p in cohort.patient_ids if p not in todo])
        rows = {r["patient_id"]: _row_dict(r) for _, r in cohort.table.iterrows()}
        tasks = [(rows[p], mods) for p, mods in todo.items()]
        workers = max(1, min(workers, len(tasks) or 1))
        threads = max(1, (os.cpu_count() or 1) // workers)
        args = (str(self.root), self.config.model_dump(mode="json"), self.content_hash, threads)

        bar, task_id = _progress(progress, len(tasks))

        def done(outcome: tuple[str, str | None]) -> None:
            self._record(report, on_error, outcome)
            if bar:
                bar.advance(task_id)

        try:
            _run_tasks(tasks, args, workers, done)
        finally:
            if bar:
                bar.stop()
        return report

    @staticmethod
    def _record(report: FillReport, on_error: str, outcome: tuple[str, str | None]) -> None:
        patient_id, error = outcome
        if error is None:
            report.processed.append(patient_id)
        elif on_error == "error":
            raise GliotlError(error)
        else:
            report.failed[patient_id] = error


def _progress(enabled: bool, total: int) -> tuple[Any, Any]:
    if not enabled or total == 0:
        return None, None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("preprocessing"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    bar.start()
    return bar, bar.add_task("patients", total=total)


def _run_tasks(tasks: list[tuple[dict[str, Any], list[str]]], args: tuple, workers: int,
               done: Callable[[tuple[str, str | None]], None]) -> None:
    """Fill each patient, here (one worker) or in a spawned process pool; ``done`` per outcome.

    Anything raised, by a worker or by ``done``, cancels the patients not yet started.
    """
    if workers == 1:
        for row, mods in tasks:
            done(_fill_patient(row, mods, *args))
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        pending = {pool.submit(_fill_patient, row, mods, *args) for row, mods in tasks}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _fill_patient(
    row: dict[str, Any],
    modalities: list[str],
    root: str,
    config: dict[str, Any],
    content_hash: bool,
    threads: int,
) -> tuple[str, str | None]:
    """Worker: preprocess one patient and store its volumes; never raises, returns the error
    message instead, so a bad file is reported by patient and path rather than as a traceback
    from inside a process pool."""
    patient_id = str(row.get("patient_id"))
    try:
        import torch

        torch.set_num_threads(1)
        cache = VolumeCache(root, PreprocessConfig.model_validate(config), content_hash)
        volumes = preprocess_patient(row, cache.config, modalities, threads=threads)
        for modality, volume in volumes.items():
            cache.put(row, modality, volume)
        return patient_id, None
    except GliotlError as exc:
        text = str(exc)
        return patient_id, text if patient_id in text else f"patient {patient_id}: {text}"
    except Exception as exc:  # anything else still becomes a one-line, attributable message
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return patient_id, (
            f"patient {patient_id}: preprocessing failed ({type(exc).__name__}: {text})"
        )
