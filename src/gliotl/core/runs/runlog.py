"""Library warnings of a run, kept out of the progress display and in the run's ``run.log``.

scikit-learn's ConvergenceWarning and friends used to interleave with the progress bars, once
per fit, from the driver and from every pool worker. Each job now records its warnings
(:func:`recorded_warnings`, in whatever process runs it) into ``warnings.json`` beside its
result; the driver appends them to ``run.log`` (:func:`append_warnings`) and the run ends with
one summary line per category (:func:`warning_summary`).
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gliotl.core.io import write_json

RUN_LOG = "run.log"
JOB_WARNINGS = "warnings.json"


def _as_record(message: warnings.WarningMessage) -> dict[str, Any]:
    return {"category": message.category.__name__, "message": str(message.message).strip(),
            "source": f"{message.filename}:{message.lineno}"}


@contextmanager
def recorded_warnings() -> Iterator[list[dict[str, Any]]]:
    """Collect every warning raised inside (each occurrence, none shown) as plain records."""
    records: list[dict[str, Any]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield records
        finally:
            records.extend(_as_record(message) for message in caught)


def save_job_warnings(job_dir: Path, records: list[dict[str, Any]]) -> None:
    """Beside the job's result (not in it: results stay what the model computed)."""
    path = job_dir / JOB_WARNINGS
    if records:
        write_json(path, records)
    elif path.exists():
        path.unlink()


def load_job_warnings(job_dir: Path) -> list[dict[str, Any]]:
    """A job's recorded warnings; none when it raised none (or the file cannot be read)."""
    try:
        data = json.loads((job_dir / JOB_WARNINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [row for row in data if isinstance(row, dict)] if isinstance(data, list) else []


def append_warnings(run_path: Path, origin: str, records: list[dict[str, Any]]) -> None:
    """Add ``records`` to the run's log, one line each: origin, category, message, source."""
    if not records:
        return
    lines = []
    for row in records:
        message = " ".join(str(row.get("message", "")).split())
        lines.append(f"{origin}\t{row.get('category', 'Warning')}\t{message}\t"
                     f"{row.get('source', '')}\n")
    with (run_path / RUN_LOG).open("a", encoding="utf-8") as log:
        log.writelines(lines)


def warning_counts(run_path: Path) -> Counter[str]:
    """How many warnings of each category the run's log holds."""
    counts: Counter[str] = Counter()
    try:
        text = (run_path / RUN_LOG).read_text(encoding="utf-8")
    except OSError:
        return counts
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            counts[parts[1]] += 1
    return counts


def warning_summary(run_path: Path) -> str | None:
    """One line counting the run's warnings per category, or None when there were none."""
    counts = warning_counts(run_path)
    if not counts:
        return None
    parts = ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))
    return f"library warnings: {parts} (each in {run_path / RUN_LOG})"


__all__ = [
    "JOB_WARNINGS",
    "RUN_LOG",
    "append_warnings",
    "load_job_warnings",
    "recorded_warnings",
    "save_job_warnings",
    "warning_counts",
    "warning_summary",
]
