"""Run directories, atomic writes, strict configs, the job runner and the CLI error path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gliotl.core.config import StrictModel, load_config
from gliotl.core.io import atomic_path, load_torch, save_torch, write_json
from gliotl.core.runs.jobs import Job, LocalExecutor, run_jobs
from gliotl.core.runs.rundir import RunDir
from gliotl.core.seeding import derive_seed
from gliotl.errors import GliotlError

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from jobfns import failing_job, square_job  # noqa: E402


class Inner(StrictModel):
    lr: float = 1e-3


class Outer(StrictModel):
    name: str
    inner: Inner = Inner()


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_unknown_config_key_is_one_line_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ninner:\n  lr: 0.1\n  lrr: 2\n")
    with pytest.raises(GliotlError) as exc:
        load_config(Outer, path)
    message = str(exc.value)
    assert "inner.lrr" in message and "unknown config key" in message and "\n" not in message
    path.write_text("name: x\ninner:\n  lr: fast\n")
    with pytest.raises(GliotlError, match="inner.lr"):
        load_config(Outer, path)
    path.write_text("name: x\n")
    assert load_config(Outer, path).inner.lr == 1e-3


def test_run_dir_refuses_to_overwrite_and_checks_config_on_resume(tmp_path):
    out = tmp_path / "run"
    run = RunDir.open("exp", {"a": 1}, seed=3, out=out)
    manifest = run.manifest()
    assert manifest["status"] == "running" and manifest["seed"] == 3
    assert "numpy" in manifest["packages"] and manifest["gliotl_version"]
    assert (out / "config.yaml").is_file() and (out / "checkpoints").is_dir()
    with pytest.raises(GliotlError, match="--resume"):
        RunDir.open("exp", {"a": 1}, seed=3, out=out)
    with pytest.raises(GliotlError, match="field 'a' differs"):
        RunDir.open("exp", {"a": 2}, seed=3, out=out, resume=True)
    again = RunDir.open("exp", {"a": 1}, seed=3, out=out, resume=True)
    assert len(again.manifest()["resumed"]) == 1
    again.finish()
    with pytest.raises(GliotlError, match="finished run is there"):
        RunDir.open("exp", {"a": 1}, seed=3, out=out)
    fresh = RunDir.open("exp", {"a": 5}, seed=3, out=out, overwrite=True)
    assert fresh.config() == {"a": 5}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(GliotlError, match="not a gliotl run"):
        RunDir.open("exp", {}, seed=0, out=tmp_path / "other")


def test_a_run_made_before_the_marker_resumes_and_gets_it(tmp_path):
    out = tmp_path / "run"
    run = RunDir.open("exp", {"a": 1}, seed=3, out=out)
    run.close()
    legacy = run.manifest()
    del legacy["gliotl_run"]
    write_json(run.manifest_path, legacy)
    again = RunDir.open("exp", {"a": 1}, seed=3, out=out, resume=True)
    assert again.manifest()["gliotl_run"] == 1
    again.close()
    write_json(run.manifest_path, {"name": "exp", "status": "running"})  # not gliotl's
    with pytest.raises(GliotlError, match="not a manifest gliotl wrote"):
        RunDir.open("exp", {"a": 1}, seed=3, out=out, resume=True)


def test_jobs_resume_reuses_finished_results(tmp_path):
    run = RunDir.open("jobs", {}, seed=0, out=tmp_path / "run")
    jobs = [Job(f"j{i}", square_job, {"value": i, "seed": derive_seed(0, i)}) for i in range(4)]
    first = run_jobs(jobs[:2], run, progress=False)
    assert set(first.results) == {"j0", "j1"}
    (run.job_dir("j0") / "artifact.txt").write_text("untouched")
    outcome = run_jobs(jobs, run, progress=False)
    assert [outcome.results[f"j{i}"]["square"] for i in range(4)] == [0, 1, 4, 9]
    assert (run.job_dir("j0") / "artifact.txt").read_text() == "untouched"  # not rerun
    frame = outcome.results["j3"]["predictions"]
    assert list(frame.columns) == ["sample_id", "y_pred"] and frame["sample_id"][0] == "s3"
    timing = json.loads((run.job_dir("j3") / "timing.json").read_text())
    assert timing["seconds"] > 0 and timing["threads"] == 1
    assert "seconds" not in outcome.results["j3"]  # results do not depend on the machine's speed


def test_a_finished_job_whose_output_is_gone_is_rerun_on_resume(tmp_path):
    run = RunDir.open("jobs", {}, seed=0, out=tmp_path / "run")
    jobs = [Job(f"j{i}", square_job, {"value": i}, outputs=("artifact.txt",)) for i in range(2)]
    run_jobs(jobs, run, progress=False)
    assert run.job_done("j0", ("artifact.txt",)) and run.job_done("j0")
    (run.job_dir("j0") / "artifact.txt").unlink()  # the model a later step reads, deleted
    (run.job_dir("j1") / "artifact.txt").write_text("kept")
    assert not run.job_done("j0", ("artifact.txt",)) and run.job_done("j0")
    outcome = run_jobs(jobs, run, progress=False)
    assert (run.job_dir("j0") / "artifact.txt").read_text() == "0"  # redone
    assert (run.job_dir("j1") / "artifact.txt").read_text() == "kept"  # reused
    assert outcome.results["j0"]["square"] == 0 and not outcome.failures


def test_failed_job_is_retried_then_reported_without_losing_others(tmp_path):
    run = RunDir.open("jobs", {}, seed=0, out=tmp_path / "run")
    jobs = [Job("flaky", failing_job, {"fail_times": 1}),
            Job("broken", failing_job, {"fail_times": 5}),
            Job("fine", square_job, {"value": 2})]
    outcome = run_jobs(jobs, run, executor=LocalExecutor(), retries=1, progress=False)
    assert outcome.results["flaky"]["attempts"] == 2
    assert "fine" in outcome.results
    assert [f.job_id for f in outcome.failures] == ["broken"]
    assert "planned failure" in outcome.failures[0].error
    assert run.manifest()["failed_jobs"][0]["job_id"] == "broken"
    with pytest.raises(GliotlError, match="--resume"):
        outcome.raise_on_failure(run)


def test_process_pool_gives_same_results_as_sequential(tmp_path):
    jobs = [Job(f"j{i}", square_job, {"value": i, "seed": derive_seed(7, i)}) for i in range(3)]
    seq = run_jobs(jobs, RunDir.open("a", {}, 0, out=tmp_path / "a"), progress=False)
    import os

    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])
    par = run_jobs(jobs, RunDir.open("b", {}, 0, out=tmp_path / "b"),
                   executor=LocalExecutor(workers=2), progress=False)
    assert {k: v["noise"] for k, v in seq.results.items()} == \
        {k: v["noise"] for k, v in par.results.items()}


def test_checkpoints_load_weights_only(tmp_path):
    import torch

    path = tmp_path / "w.pt"
    save_torch(path, {"w": torch.ones(2)})
    assert torch.equal(load_torch(path)["w"], torch.ones(2))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(GliotlError, match="weights-only"):
        load_torch(tmp_path / "evil.pt")
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:20])
    with pytest.raises(GliotlError, match="trunc.pt"):
        load_torch(tmp_path / "trunc.pt")


def test_cli_prints_one_line_and_exits_2_on_bad_config(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("name: x\nnot_a_key: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gliotl", "drug", "run", str(config), "--out", str(tmp_path / "r")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not_a_key" in lines[0] and "Traceback" not in proc.stderr
