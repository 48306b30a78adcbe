"""Progress of a stage's jobs that reads well on a terminal and in a cluster log alike.

On a terminal a rich bar shows the count, elapsed time and an ETA. When output is not a
terminal (a Slurm log, ``CI=true``) a bar prints nothing until it ends, so instead one plain
line is printed per finished job (count, rate, ETA) and a heartbeat line whenever a long job
leaves the log silent for :func:`heartbeat_seconds` (default 60 s, set by
``GLIOTL_PROGRESS_SECONDS``), so a log never looks hung.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any

from gliotl.errors import GliotlError

HEARTBEAT_ENV = "GLIOTL_PROGRESS_SECONDS"
DEFAULT_HEARTBEAT_SECONDS = 60.0


def heartbeat_seconds() -> float:
    """The longest silence allowed in plain output, from ``GLIOTL_PROGRESS_SECONDS``."""
    text = os.environ.get(HEARTBEAT_ENV)
    if text is None or not text.strip():
        return DEFAULT_HEARTBEAT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise GliotlError(f"{HEARTBEAT_ENV}: expected a positive number of seconds, got '{text}'")
    return value


def plain_output() -> bool:
    """True when progress must be plain lines: stdout is not a terminal, or ``CI`` is set."""
    ci = os.environ.get("CI", "").strip().lower()
    if ci and ci not in {"0", "false", "no"}:
        return True
    return not sys.stdout.isatty()


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m07s`` or ``12s``: short enough for one log line."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


_last_line = [time.monotonic()]  # when this process last printed a progress line


def print_line(text: str) -> None:
    """One progress line on stdout, flushed at once (a log file must see it now)."""
    print(f"[gliotl] {text}", flush=True)
    _last_line[0] = time.monotonic()


def silent_for() -> float:
    """Seconds since this process last printed a progress line."""
    return time.monotonic() - _last_line[0]


class _Heartbeat(ABC):
    """A daemon thread that calls :meth:`quiet_line` whenever the log has been silent for
    ``heartbeat`` seconds, from ``start()`` until the ``with`` block ends."""

    def __init__(self, heartbeat: float, thread_name: str):
        self.heartbeat = heartbeat
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=thread_name, daemon=True)

    def start_beating(self) -> None:
        self._thread.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.heartbeat / 2)):
            if silent_for() >= self.heartbeat:
                self.quiet_line()

    @abstractmethod
    def quiet_line(self) -> None:
        """Print the line that says the work is still going on."""


class RunHeartbeat(_Heartbeat):
    """A whole run's safety net in plain output: whatever it is doing between job stages
    (reading data, preparing a cohort, bootstrapping the report), a line appears whenever
    the log has been silent for :func:`heartbeat_seconds`. ``activity`` says what it is on."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.activity = label, "starting"
        self.enabled = enabled and plain_output()
        super().__init__(heartbeat_seconds() if self.enabled else DEFAULT_HEARTBEAT_SECONDS,
                         "gliotl-run-heartbeat")

    def __enter__(self) -> RunHeartbeat:
        if self.enabled:
            self.start_beating()
        return self

    def quiet_line(self) -> None:
        print_line(f"{self.label}: {self.activity}, elapsed "
                   f"{format_duration(time.monotonic() - self.start)} (still running)")


class PlainProgress(_Heartbeat):
    """Counts finished jobs and prints one line each, plus heartbeats while the log is quiet."""

    def __init__(self, description: str, total: int, completed: int,
                 heartbeat: float | None = None):
        self.description, self.total = description, total
        self.done = completed
        self.resumed = completed  # finished before this process started: not in the rate
        self._lock = threading.Lock()
        super().__init__(heartbeat if heartbeat is not None else heartbeat_seconds(),
                         "gliotl-heartbeat")

    def __enter__(self) -> PlainProgress:
        if self.done < self.total:
            self._say(f"{self.description}: {self.done}/{self.total} jobs done, starting")
            self.start_beating()
        return self

    def _say(self, text: str) -> None:
        with self._lock:
            print_line(text)

    def status(self) -> str:
        """Count, rate (jobs finished here per minute) and ETA of the remaining jobs."""
        elapsed = time.monotonic() - self.start
        here = self.done - self.resumed
        text = f"{self.description}: {self.done}/{self.total} jobs done"
        if here > 0 and elapsed > 0:
            rate = here / elapsed * 60
            eta = (self.total - self.done) / (here / elapsed)
            text += f", {rate:.2f} jobs/min, ETA {format_duration(eta)}"
        return text + f", elapsed {format_duration(elapsed)}"

    def advance(self) -> None:
        self.done += 1
        self._say(self.status())

    def quiet_line(self) -> None:
        self._say(self.status() + " (still running)")


class BarProgress:
    """The rich bar: description, bar, count, elapsed and remaining time."""

    def __init__(self, description: str, total: int, completed: int, enabled: bool):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), "ETA", TimeRemainingColumn(), disable=not enabled,
            transient=False,
        )
        self._task = self._bar.add_task(description, total=total, completed=completed)

    def __enter__(self) -> BarProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._bar.__exit__(kind, exc, tb)

    def advance(self) -> None:
        self._bar.advance(self._task)


def job_progress(description: str, total: int, completed: int, enabled: bool) -> Any:
    """The progress display for one stage: plain lines off a terminal, else a rich bar."""
    if enabled and plain_output():
        return PlainProgress(description, total, completed)
    return BarProgress(description, total, completed, enabled)


class EpochReporter:
    """Per-epoch progress of one training run at a sensible rate: about ten lines per fold
    (every ``max(1, epochs // 10)`` epochs and the last), only in plain output, where no bar
    shows that a fold is alive."""

    SHOWN = frozenset({"train_loss", "val_loss", "val_auc", "loss", "dice"})

    def __init__(self, label: str, epochs: int, enabled: bool | None = None):
        self.label, self.epochs = label, epochs
        self.every = max(1, epochs // 10)
        self.enabled = plain_output() if enabled is None else enabled

    def __call__(self, epoch: int, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        number = epoch + 1
        if number % self.every and number != self.epochs:
            return
        values = ", ".join(f"{key} {value:.4g}" for key, value in row.items()
                           if key in self.SHOWN and isinstance(value, float))
        print_line(f"{self.label}: epoch {number}/{self.epochs}" + (f": {values}" if values
                                                                    else ""))


__all__ = [
    "DEFAULT_HEARTBEAT_SECONDS",
    "HEARTBEAT_ENV",
    "BarProgress",
    "EpochReporter",
    "PlainProgress",
    "RunHeartbeat",
    "format_duration",
    "heartbeat_seconds",
    "job_progress",
    "plain_output",
]
