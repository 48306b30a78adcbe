"""Run an experiment's independent jobs on a Ray cluster (extra: ``pip install "gliotl[ray]"``).

Each :class:`~gliotl.core.runs.jobs.Job` becomes one Ray task reserving the job's ``cpus``/``gpus``;
results come back to the driver, which persists them in the run directory exactly as the local
executor does, so ``--resume`` reuses every finished job whatever executor ran it. Retries are
done by the driver (one fresh task per attempt), so a job that raises and a job whose worker
process or node died are treated alike: retried up to ``retries`` times, then reported as a
failure while the other jobs go on.

Existing cluster (every node must have gliotl installed in the same Python environment)::

    ray start --head --port 6379 --num-cpus 16 --num-gpus 2      # on the head node
    ray start --address HEAD_IP:6379                             # on each worker node
    gliotl drug run CONFIG --executor ray --ray-address HEAD_IP:6379   # or --ray-address auto
                                                                 # when run on a cluster node

Slurm through Ray (one Ray cluster per allocation)::

    #!/bin/bash
    #SBATCH --nodes=3 --ntasks-per-node=1 --cpus-per-task=16 --gres=gpu:2 --time=24:00:00
    nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
    head=${nodes[0]}
    head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')
    srun --nodes=1 --ntasks=1 -w "$head" ray start --head --node-ip-address="$head_ip" \\
        --port=6379 --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus=2 --block &
    sleep 20
    for node in "${nodes[@]:1}"; do
        srun --nodes=1 --ntasks=1 -w "$node" ray start --address="$head_ip:6379" \\
            --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus=2 --block &
    done
    sleep 20
    gliotl drug run CONFIG --executor ray --ray-address "$head_ip:6379" --retries 2

The run directory should be on a filesystem every node mounts at the same path (the default,
``shared_fs=True``): jobs then write their artifacts straight into ``jobs/<id>/``. Without one,
``shared_fs=False`` runs each job in a temporary folder on its worker and sends the files it wrote
back to the driver as bytes (at most ``max_artifact_bytes`` per job, 1 GiB by default; a job over
the limit fails without retry), which writes them into ``jobs/<id>/`` before marking it done.
A job asking for more CPUs/GPUs than any node has is refused up front instead of waiting forever
(pass ``check_resources=False`` for an autoscaling cluster whose nodes appear on demand).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from gliotl.core.io import write_bytes, write_text
from gliotl.core.runs.jobs import Job, call_job
from gliotl.core.runs.rundir import RunDir
from gliotl.errors import GliotlError

DEFAULT_MAX_ARTIFACT_BYTES = 1 << 30
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class ArtifactLimitError(RuntimeError):
    """A job's files are too large to send back to the driver; retrying cannot help."""


def _set_threads(cpus: float) -> None:
    """Give the job as many intra-op threads as CPUs it reserved (Ray reuses worker processes)."""
    threads = max(1, int(cpus))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    else:  # read by torch when the job imports it; no need to import it for a job without it
        os.environ["OMP_NUM_THREADS"] = str(threads)


def _collect_artifacts(root: Path, limit: int) -> dict[str, bytes]:
    """Every regular file under ``root`` as ``{relative posix path: bytes}``, refusing > limit."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    total = sum(p.stat().st_size for p in files)
    if total > limit:
        raise ArtifactLimitError(
            f"job artifacts total {total} bytes, over the limit of {limit} bytes for returning "
            "them to the driver; use a shared filesystem (shared_fs=True) or raise "
            "max_artifact_bytes"
        )
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def _run_on_worker(
    job: Job, job_dir: str | None, limit: int
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The body of one Ray task: run the job in the shared run dir or in a private temp dir."""
    _set_threads(job.cpus)
    if job_dir is not None:
        return call_job(job, Path(job_dir)), {}
    with tempfile.TemporaryDirectory(prefix=f"gliotl-{job.job_id}-") as tmp:
        work = Path(tmp) / "job"
        result = call_job(job, work)
        return result, _collect_artifacts(work, limit)


def _write_artifacts(job_dir: Path, artifacts: dict[str, bytes]) -> None:
    """Write returned files into the job folder, refusing any path that would leave it."""
    for relative, data in artifacts.items():
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
            raise RuntimeError(f"refusing artifact path outside the job folder: {relative!r}")
        write_bytes(job_dir.joinpath(*parts), data)


class RayExecutor:
    """Runs jobs as Ray tasks and yields ``(job, result_or_exception, attempts)`` as each ends.

    ``address``: ``"auto"`` (the cluster this machine belongs to), ``"HOST:PORT"`` (a head node),
    ``"ray://HOST:PORT"`` (Ray client), ``"local"`` (a fresh single-machine instance, bound to
    loopback, with ``num_cpus``/``num_gpus``) or ``None`` (Ray's default: ``RAY_ADDRESS`` or a
    fresh instance). If this process is already connected to Ray, that connection is used and
    left open; an instance or connection this executor opened is closed when the run ends.
    ``runtime_env`` is applied to every task (e.g. ``{"env_vars": {"PYTHONPATH": ...}}`` so that
    workers can import job functions that are not installed).
    """

    def __init__(
        self,
        address: str | None = "auto",
        shared_fs: bool = True,
        runtime_env: dict[str, Any] | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
        check_resources: bool = True,
    ):
        if address is not None and address not in ("auto", "local") and not _ADDRESS.match(
            address
        ):
            raise GliotlError(
                f"--ray-address: expected 'auto', 'local' or HOST:PORT, got '{address}'"
            )
        if num_cpus is not None and num_cpus < 1:
            raise GliotlError(f"--workers: expected a positive number of CPUs, got {num_cpus}")
        if max_artifact_bytes < 0:
            raise ValueError("max_artifact_bytes must be >= 0")
        self.address = address
        self.shared_fs = shared_fs
        self.runtime_env = runtime_env
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_artifact_bytes = max_artifact_bytes
        self.check_resources = check_resources

    # -- connection ---------------------------------------------------------------------------
    def _connect(self):
        """Import Ray and connect; returns (ray module, whether we must shut it down)."""
        if self.address == "local" and "ray" not in sys.modules:
            # Without this Ray binds a single-machine instance to the host's network address.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network calls home
        try:
            import ray
        except ImportError:
            raise GliotlError(
                "--executor ray: Ray is not installed; install it with pip install 'gliotl[ray]'"
            ) from None
        if ray.is_initialized():
            return ray, False
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if self.address in (None, "local"):
            kwargs.update(num_cpus=self.num_cpus, num_gpus=self.num_gpus)
        self._check_reachable()
        try:
            ray.init(address=self.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GliotlError(
                f"--ray-address: could not connect to Ray at '{self.address}' ({first}); start "
                "a cluster with `ray start --head` or use --ray-address local"
            ) from None
        return ray, True

    def _check_reachable(self) -> None:
        """Fail fast on a wrong HOST:PORT: Ray itself keeps retrying it for minutes."""
        if self.address in (None, "auto", "local"):
            return
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
        except OSError as exc:
            raise GliotlError(
                f"--ray-address: nothing answers at '{self.address}' ({exc}); check the head "
                "node's address and port (`ray start --head --port 6379`)"
            ) from None

    def _check_feasible(self, ray, jobs: list[Job]) -> None:
        """Refuse jobs no alive node can ever host: Ray would otherwise queue them forever."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        best_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
        best_gpu = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
        for job in jobs:
            if not any(
                n.get("CPU", 0.0) >= job.cpus and n.get("GPU", 0.0) >= job.gpus for n in nodes
            ):
                raise GliotlError(
                    f"job {job.job_id}: needs {job.cpus:g} CPU(s) and {job.gpus:g} GPU(s) but the "
                    f"largest Ray node has {best_cpu:g} CPU(s) and {best_gpu:g} GPU(s); lower the "
                    "job resources in the config or add nodes"
                )

    # -- execution ----------------------------------------------------------------------------
    def _options(self, job: Job) -> dict[str, Any]:
        """Ray task options for one attempt of ``job``."""
        options: dict[str, Any] = {
            "num_cpus": job.cpus,
            "num_gpus": job.gpus,
            "max_retries": 0,  # the driver retries, counting every attempt
            "retry_exceptions": False,
            "name": f"gliotl:{job.job_id}",
        }
        if self.runtime_env is not None:
            options["runtime_env"] = self.runtime_env
        return options

    def run(
        self, jobs: list[Job], run: RunDir, retries: int
    ) -> Iterator[tuple[Job, dict[str, Any] | BaseException, int]]:
        if not jobs:
            return
        ray, owned = self._connect()
        pending: dict[Any, Job] = {}
        try:
            if self.check_resources:
                self._check_feasible(ray, jobs)
            remote = ray.remote(_run_on_worker)
            attempts = {job.job_id: 0 for job in jobs}

            def submit(job: Job) -> None:
                job_dir = str(run.job_dir(job.job_id).resolve()) if self.shared_fs else None
                attempts[job.job_id] += 1
                ref = remote.options(**self._options(job)).remote(
                    job, job_dir, self.max_artifact_bytes
                )
                pending[ref] = job

            for job in jobs:
                submit(job)
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ref)
                outcome, failed = _collect(ray, ref, run.job_dir(job.job_id), attempts[job.job_id])
                if failed and attempts[job.job_id] <= retries and not isinstance(
                    outcome, ArtifactLimitError
                ):
                    submit(job)
                    continue
                yield job, outcome, attempts[job.job_id]
        finally:
            _release(ray, pending, owned)


def _collect(
    ray, ref: Any, job_dir: Path, attempt: int
) -> tuple[dict[str, Any] | BaseException, bool]:
    """A finished task's result (its files written into ``job_dir``) and whether it failed.

    A failure is logged to ``error.txt`` and returned as the job's own exception; a GliotlError
    is raised instead, since a user mistake is the same for every attempt.
    """
    try:
        result, artifacts = ray.get(ref)
        _write_artifacts(job_dir, artifacts)
    except Exception as exc:  # job raised, or its worker/node died
        error = _unwrap(ray, exc)
        if isinstance(error, GliotlError):
            raise error from None  # a user mistake: the same for every attempt
        write_text(job_dir / "error.txt", _describe(exc, attempt))
        return error, True
    return result, False


def _release(ray, pending: dict[Any, Job], owned: bool) -> None:
    """Cancel what is still queued or running (an interrupted run); close a Ray we opened."""
    for ref in pending:
        ray.cancel(ref, force=True)
    if owned:
        ray.shutdown()


def _unwrap(ray, exc: BaseException) -> BaseException:
    """The job's own exception for a task error; Ray's error for a crashed worker or node."""
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
        return exc.cause
    return exc


def _describe(exc: BaseException, attempt: int) -> str:
    text = str(exc) or "".join(traceback.format_exception(exc))
    return f"attempt {attempt}: {type(exc).__name__}\n{text}\n"
