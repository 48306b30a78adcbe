"""Progress off a terminal (a Slurm log, CI=true): a line per finished job with count, rate
and ETA, a heartbeat while a job runs long, and library warnings in the run's log, not on
the screen."""

from __future__ import annotations

import re

import pytest

import jobfns
from gliotl.core.reporting.progress import EpochReporter, format_duration, heartbeat_seconds
from gliotl.core.runs.jobs import Job, LocalExecutor, run_jobs
from gliotl.core.runs.rundir import RUN_FILES, RunDir
from gliotl.core.runs.runlog import RUN_LOG, warning_counts
from gliotl.errors import GliotlError


def open_run(tmp_path) -> RunDir:
    return RunDir.open("progress-test", {"experiment": "p"}, seed=1, out=tmp_path / "run")


def test_a_slow_stage_off_a_terminal_prints_job_lines_and_heartbeats(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("GLIOTL_PROGRESS_SECONDS", "0.2")
    jobs = [Job(f"slow{i}", jobfns.sleeps, {"seconds": 1.0, "index": i}) for i in range(2)]
    outcome = run_jobs(jobs, open_run(tmp_path), progress=True, description="slow stage")
    assert not outcome.failures
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[gliotl]")]
    done = [line for line in lines if re.search(r"slow stage: [12]/2 jobs done, [\d.]+ jobs/min,"
                                                r" ETA \S+, elapsed", line)]
    assert len(done) >= 2 and "ETA 0s" in done[-1]
    beats = [line for line in lines if line.endswith("(still running)")]
    # 2 s of jobs, a line at least every 0.2 s: far more heartbeats than job lines.
    assert len(beats) >= 4
    assert "slow stage: 0/2 jobs done" in beats[0]


def test_finished_jobs_are_reported_as_resumed_without_a_rate(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CI", "1")
    run = open_run(tmp_path)
    jobs = [Job(f"j{i}", jobfns.sleeps, {"seconds": 0.0, "index": i}) for i in range(3)]
    run_jobs(jobs[:2], run, progress=True, description="first")
    capsys.readouterr()
    run_jobs(jobs, run, progress=True, description="again")
    out = capsys.readouterr().out
    assert "again: 2/3 jobs done, starting" in out and "again: 3/3 jobs done" in out


def test_no_progress_prints_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CI", "true")
    run_jobs([Job("a", jobfns.sleeps, {"seconds": 0.0})], open_run(tmp_path), progress=False)
    assert "[gliotl]" not in capsys.readouterr().out


@pytest.mark.parametrize("workers", [1, 2])
def test_library_warnings_go_to_the_run_log_not_the_screen(tmp_path, workers, capsys):
    run = open_run(tmp_path)
    jobs = [Job(f"fit{i}", jobfns.fits_unconverged, {"fits": 2}) for i in range(2)]
    with _no_warning_escapes():
        outcome = run_jobs(jobs, run, executor=LocalExecutor(workers), progress=False)
    assert not outcome.failures
    assert warning_counts(run.path) == {"ConvergenceWarning": 4}
    log = (run.path / RUN_LOG).read_text(encoding="utf-8").splitlines()
    assert sorted({line.split("\t")[0] for line in log}) == ["fit0", "fit1"]
    captured = capsys.readouterr()
    assert "ConvergenceWarning" not in captured.out + captured.err
    assert RUN_LOG in RUN_FILES


class _no_warning_escapes:
    """Fails the test if any warning reaches the caller (they belong in the run log)."""

    def __enter__(self):
        import warnings

        self._catcher = warnings.catch_warnings(record=True)
        self.caught = self._catcher.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catcher.__exit__(*exc)
        assert [str(w.message) for w in self.caught] == []


def test_heartbeat_interval_is_checked(monkeypatch):
    monkeypatch.setenv("GLIOTL_PROGRESS_SECONDS", "soon")
    with pytest.raises(GliotlError, match="GLIOTL_PROGRESS_SECONDS: expected a positive"):
        heartbeat_seconds()
    monkeypatch.delenv("GLIOTL_PROGRESS_SECONDS")
    assert heartbeat_seconds() == 60.0


def test_epoch_lines_come_about_ten_per_fold(capsys):
    report = EpochReporter("spottune t1gd fold 0", epochs=95, enabled=True)
    for epoch in range(95):
        report(epoch, {"epoch": epoch, "loss": 0.5, "val_auc": 0.75})
    lines = capsys.readouterr().out.splitlines()
    assert 9 <= len(lines) <= 11
    assert lines[-1] == "[gliotl] spottune t1gd fold 0: epoch 95/95: loss 0.5, val_auc 0.75"


def test_durations_read_short():
    assert [format_duration(s) for s in (4.4, 187, 3720)] == ["4s", "3m07s", "1h02m"]


def test_a_slow_step_between_stages_still_prints_a_line(tmp_path, monkeypatch, capsys):
    import time

    from gliotl.core.config import StrictModel
    from gliotl.core.runs.experiment import run_experiment

    class Toy(StrictModel):
        name: str = "toy"

    def body(experiment):
        experiment.prepare_once(experiment.run.path / "summary.json",
                                lambda: time.sleep(1.0), lambda: None)
        return {}

    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("GLIOTL_PROGRESS_SECONDS", "0.2")
    run_experiment(Toy(), body, name="toy", seed=1, out=tmp_path / "slowprep")
    beats = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("[gliotl] slowprep: preparing summary.json, elapsed ")
             and line.endswith("(still running)")]
    assert len(beats) >= 3
