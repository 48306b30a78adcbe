"""Local executors: sequential and process pool give the same results; failures and killed
workers are retried and reported without losing the other jobs; interrupted runs resume.

Process pools are few on purpose: each spawned worker imports torch, which is slow on a busy
2-core machine."""

from __future__ import annotations

import pandas as pd
import pytest

import jobfns
from gliotl.core.runs.jobs import Job, LocalExecutor, make_executor, run_jobs
from gliotl.core.runs.rundir import RunDir
from gliotl.errors import GliotlError


def open_run(tmp_path, name="run", resume=False) -> RunDir:
    return RunDir.open(
        "exec-test", {"experiment": name}, seed=7, out=tmp_path / name, resume=resume
    )


def training_jobs(folds=(0, 1, 2)) -> list[Job]:
    return [Job(f"fold{f}", jobfns.train_tiny, {"seed": 7, "fold": f}) for f in folds]


def assert_same_results(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for job_id in a:
        assert a[job_id]["mse"] == b[job_id]["mse"]
        assert a[job_id]["weights_sha256"] == b[job_id]["weights_sha256"]
        pd.testing.assert_frame_equal(a[job_id]["predictions"], b[job_id]["predictions"])


@pytest.mark.slow
def test_interrupted_run_resumes_in_a_pool_with_the_sequential_results(tmp_path):
    sequential = run_jobs(training_jobs(), open_run(tmp_path, "seq"), progress=False)
    assert not sequential.failures
    assert len({r["weights_sha256"] for r in sequential.results.values()}) == 3

    run = open_run(tmp_path, "pool")
    run_jobs(training_jobs()[:1], run, progress=False)  # the run "stops" after one job
    resumed = open_run(tmp_path, "pool", resume=True)
    outcome = run_jobs(training_jobs(), resumed, LocalExecutor(workers=2), progress=False)
    assert not outcome.failures
    assert_same_results(sequential.results, outcome.results)
    assert [jobfns.calls(run.job_dir(f"fold{f}")) for f in range(3)] == [1, 1, 1]
    assert (run.job_dir("fold2") / "model.pt").is_file()
    assert (run.job_dir("fold2") / "predictions.csv").is_file()
    assert len(run.manifest()["resumed"]) == 1


def test_failing_job_is_retried_then_reported_and_others_complete(tmp_path):
    run = open_run(tmp_path)
    jobs = [Job("bad", jobfns.always_fails), Job("a", jobfns.quick, {"value": 1}),
            Job("b", jobfns.quick, {"value": 2})]
    outcome = run_jobs(jobs, run, LocalExecutor(1), retries=2, progress=False)
    assert {k: v["value"] for k, v in outcome.results.items()} == {"a": 2, "b": 4}
    [failure] = outcome.failures
    assert (failure.job_id, failure.attempts) == ("bad", 3)
    assert failure.error == "ValueError: synthetic failure"
    assert jobfns.calls(run.job_dir("bad")) == 3
    assert "synthetic failure" in (run.job_dir("bad") / "error.txt").read_text()
    assert not run.job_done("bad")
    assert run.manifest()["failed_jobs"][0]["job_id"] == "bad"
    with pytest.raises(GliotlError, match="1 job\\(s\\) failed"):
        outcome.raise_on_failure(run)


@pytest.mark.slow
def test_pool_survives_a_killed_worker_and_a_failing_job(tmp_path):
    run = open_run(tmp_path)
    jobs = [Job("killed", jobfns.killed_first_time, {"value": 5}),
            Job("bad", jobfns.always_fails),
            *(Job(f"q{i}", jobfns.quick, {"value": i}) for i in range(2))]
    outcome = run_jobs(jobs, run, LocalExecutor(workers=2), retries=1, progress=False)
    assert outcome.results["killed"]["value"] == 5
    assert jobfns.calls(run.job_dir("killed")) == 2
    assert [outcome.results[f"q{i}"]["value"] for i in range(2)] == [0, 2]
    [failure] = outcome.failures
    # 2 charged attempts; one more is counted when the crash also cut short its first run
    assert failure.job_id == "bad" and failure.attempts in (2, 3)
    assert jobfns.calls(run.job_dir("bad")) >= 2
    assert "ValueError: synthetic failure" in failure.error
    assert all(run.job_done(job.job_id) for job in jobs if job.job_id != "bad")


def test_pool_broken_between_waits_requeues_the_unsubmitted_job(tmp_path, monkeypatch):
    """CI once saw submit() itself raise BrokenProcessPool: a worker died after the last wait().
    The job being submitted never started, so it is queued again, not lost or charged."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    import gliotl.core.runs.jobs as jobs_module

    submits = {"count": 0}

    class BreaksOnSecondSubmit(ProcessPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            submits["count"] += 1
            if submits["count"] == 2:
                raise BrokenProcessPool("a child process terminated abruptly")
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(jobs_module, "ProcessPoolExecutor", BreaksOnSecondSubmit)
    run = open_run(tmp_path)
    jobs = [Job(f"q{i}", jobfns.quick, {"value": i}) for i in range(3)]
    outcome = run_jobs(jobs, run, LocalExecutor(workers=2), retries=0, progress=False)
    assert not outcome.failures
    assert [outcome.results[f"q{i}"]["value"] for i in range(3)] == [0, 2, 4]
    assert [jobfns.calls(run.job_dir(f"q{i}")) for i in range(3)] == [1, 1, 1]


def test_make_executor_passes_options():
    assert make_executor("local", 3, address="ignored").workers == 3
    with pytest.raises(GliotlError, match="--executor"):
        make_executor("dask")
    with pytest.raises(GliotlError, match="--workers"):
        make_executor("local", 0)


def test_shared_fs_flag_reaches_the_ray_executor_and_is_refused_without_ray(tmp_path):
    import subprocess
    import sys

    from gliotl.core.cli_options import build_executor

    assert build_executor("ray", 1, "local", shared_fs=False).shared_fs is False
    assert build_executor("ray", 1, None).shared_fs is True
    for command in ("drug", "mgmt"):  # flags are checked before the config is read
        done = subprocess.run(
            [sys.executable, "-m", "gliotl", command, "run", str(tmp_path / "none.yaml"),
             "--no-shared-fs"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2
        assert done.stderr.strip() == "error: --no-shared-fs: only applies to --executor ray"


def test_ray_executor_without_ray_is_a_user_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    executor = make_executor("ray", address="local")
    with pytest.raises(GliotlError, match="pip install 'gliotl\\[ray\\]'"):
        list(executor.run([Job("a", jobfns.quick, {"value": 1})], open_run(tmp_path), 0))


def test_unreachable_ray_address_fails_fast(tmp_path):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as free:  # a loopback port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    executor = make_executor("ray", address=f"127.0.0.1:{port}")
    with pytest.raises(GliotlError, match="nothing answers at '127.0.0.1:"):
        list(executor.run([Job("a", jobfns.quick, {"value": 1})], open_run(tmp_path), 0))


def test_pool_workers_end_with_a_killed_parent(tmp_path):
    """kill -9 of the driver while both workers are in a 120 s job: they end within 10 s
    instead of computing for nobody."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    tests = Path(jobfns.__file__).resolve().parent
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import jobfns\n"
        "from pathlib import Path\n"
        "from gliotl.core.runs.jobs import Job, LocalExecutor, run_jobs\n"
        "from gliotl.core.runs.rundir import RunDir\n"
        "run = RunDir.open('orphans', {}, 0, out=Path(sys.argv[2]))\n"
        "jobs = [Job(f'busy{i}', jobfns.busy, {'seconds': 120}) for i in range(2)]\n"
        "run_jobs(jobs, run, LocalExecutor(2), progress=False)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", script, str(tests), str(tmp_path / "run")])
    started = [tmp_path / "run" / "jobs" / f"busy{i}" / "started" for i in range(2)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(p.is_file() and p.read_text()
                                                  for p in started):
        assert driver.poll() is None, "the driver ended before its jobs started"
        time.sleep(0.2)
    workers = [int(p.read_text()) for p in started]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    end = time.monotonic() + 10

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state not in ("Z", "X")

    while time.monotonic() < end and any(alive(pid) for pid in workers):
        time.sleep(0.2)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "pool workers outlived their killed parent"
