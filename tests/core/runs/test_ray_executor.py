"""RayExecutor on a local, loopback-only Ray instance: the same results as the local executor,
retries of failing jobs and killed workers, artifacts returned without a shared filesystem, and
resumption of an interrupted run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Bind the test instance to 127.0.0.1 (read when Ray is imported) and never phone home.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")

import pandas as pd  # noqa: E402

import jobfns  # noqa: E402
from gliotl.core.runs.jobs import Job, make_executor, run_jobs, save_job_result  # noqa: E402
from gliotl.core.runs.ray_executor import RayExecutor, _write_artifacts  # noqa: E402
from gliotl.core.runs.rundir import RunDir  # noqa: E402
from gliotl.errors import GliotlError  # noqa: E402

pytestmark = pytest.mark.ray
TESTS_DIR = str(Path(__file__).resolve().parents[2])
# Workers import the job functions of tests/jobfns.py through PYTHONPATH.
RUNTIME_ENV = {"env_vars": {"PYTHONPATH": TESTS_DIR}}


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
        object_store_memory=100 * 1024**2,
    )
    yield ray
    ray.shutdown()


def open_run(root: Path, name: str, resume: bool = False) -> RunDir:
    return RunDir.open("ray-test", {"experiment": name}, seed=3, out=root / name, resume=resume)


def training_jobs() -> list[Job]:
    return [Job(f"fold{f}", jobfns.train_tiny, {"seed": 3, "fold": f}) for f in range(3)]


def executor(**options) -> RayExecutor:
    return RayExecutor(address="auto", runtime_env=RUNTIME_ENV, **options)


@pytest.mark.slow
@pytest.mark.parametrize("shared_fs", [True, False])
def test_ray_gives_the_sequential_results(ray_instance, tmp_path, shared_fs):
    sequential = run_jobs(training_jobs(), open_run(tmp_path, "seq"), progress=False)
    run = open_run(tmp_path, "ray")
    outcome = run_jobs(training_jobs(), run, executor(shared_fs=shared_fs), progress=False)
    assert not outcome.failures
    for job_id, expected in sequential.results.items():
        got = outcome.results[job_id]
        assert (got["mse"], got["weights_sha256"]) == (expected["mse"], expected["weights_sha256"])
        pd.testing.assert_frame_equal(got["predictions"], expected["predictions"])
        # artifacts are in the run dir, written by the worker or sent back to the driver
        assert (run.job_dir(job_id) / "model.pt").stat().st_size > 0
        assert jobfns.calls(run.job_dir(job_id)) == 1
    assert len({r["weights_sha256"] for r in outcome.results.values()}) == 3


def test_failures_and_killed_workers_are_retried_then_reported(ray_instance, tmp_path):
    run = open_run(tmp_path, "faults")
    jobs = [Job("killed", jobfns.killed_first_time, {"value": 5}),
            Job("bad", jobfns.always_fails), Job("doomed", jobfns.always_killed),
            Job("ok", jobfns.quick, {"value": 4}, cpus=0.5)]
    outcome = run_jobs(jobs, run, executor(), retries=1, progress=False)
    assert {k: v["value"] for k, v in outcome.results.items()} == {"killed": 5, "ok": 8}
    assert jobfns.calls(run.job_dir("killed")) == 2
    failures = {f.job_id: f for f in outcome.failures}
    assert sorted(failures) == ["bad", "doomed"]
    assert failures["bad"].error == "ValueError: synthetic failure"
    assert failures["bad"].attempts == 2 and jobfns.calls(run.job_dir("bad")) == 2
    assert failures["doomed"].error.startswith("WorkerCrashedError")
    assert failures["doomed"].attempts == 2 and jobfns.calls(run.job_dir("doomed")) == 2
    assert "synthetic failure" in (run.job_dir("bad") / "error.txt").read_text()
    assert {f["job_id"] for f in run.manifest()["failed_jobs"]} == {"bad", "doomed"}


def test_interrupted_run_resumes_and_reuses_finished_jobs(ray_instance, tmp_path):
    run = open_run(tmp_path, "resume")
    jobs = [Job(f"q{i}", jobfns.quick, {"value": i}) for i in range(5)]
    stream = executor().run(jobs, run, retries=0)
    finished = []
    for job, result, _ in stream:  # the driver persists two results, then is interrupted
        save_job_result(run.job_dir(job.job_id), result)
        finished.append(job.job_id)
        if len(finished) == 2:
            break
    stream.close()  # cancels what is still queued or running
    resumed = open_run(tmp_path, "resume", resume=True)
    outcome = run_jobs(jobs, resumed, executor(shared_fs=False), progress=False)
    assert not outcome.failures
    assert [outcome.results[f"q{i}"]["value"] for i in range(5)] == [0, 2, 4, 6, 8]
    for job_id in finished:
        assert jobfns.calls(run.job_dir(job_id)) == 1  # reused, not rerun
    for i in range(5):  # files of the rerun jobs came back from the workers' temporary dirs
        assert (run.job_dir(f"q{i}") / "sub" / "note.txt").read_text() == f"value {i}\n"


def test_artifacts_over_the_limit_fail_without_retry(ray_instance, tmp_path):
    run = open_run(tmp_path, "limit")
    jobs = [Job("big", jobfns.quick, {"value": 1})]
    small = executor(shared_fs=False, max_artifact_bytes=4)
    outcome = run_jobs(jobs, run, small, retries=3, progress=False)
    [failure] = outcome.failures
    assert failure.attempts == 1 and failure.error.startswith("ArtifactLimitError")
    assert not run.job_done("big")


def test_unplaceable_job_and_bad_address_are_user_errors(ray_instance, tmp_path):
    run = open_run(tmp_path, "gpu")
    with pytest.raises(GliotlError, match="needs 1 CPU\\(s\\) and 1 GPU\\(s\\)"):
        list(executor().run([Job("gpu", jobfns.quick, {"value": 1}, gpus=1)], run, 0))
    with pytest.raises(GliotlError, match="--ray-address"):
        RayExecutor(address="not an address")


def test_make_executor_passes_ray_options():
    ex = make_executor("ray", 4, address="local", shared_fs=False, runtime_env=RUNTIME_ENV)
    assert isinstance(ex, RayExecutor)
    assert (ex.address, ex.num_cpus, ex.shared_fs, ex.runtime_env) == (
        "local", 4, False, RUNTIME_ENV
    )
    assert make_executor("ray", address="10.0.0.5:6379").num_cpus is None


def test_artifact_paths_cannot_leave_the_job_dir(tmp_path):
    with pytest.raises(RuntimeError, match="outside the job folder"):
        _write_artifacts(tmp_path / "job", {"../escape.txt": b"x"})
    _write_artifacts(tmp_path / "job", {"a/b.txt": b"x"})
    assert (tmp_path / "job" / "a" / "b.txt").read_bytes() == b"x"
