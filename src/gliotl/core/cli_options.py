"""Options shared by every ``gliotl ... run`` command, declared once.

``gliotl drug run`` and ``gliotl mgmt run`` take the same run-directory and executor flags;
keeping them here keeps their names, defaults and help texts identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Out = Annotated[
    Path | None, typer.Option("--out", help="run directory (default runs/<name>-<time>)")
]
Resume = Annotated[bool, typer.Option("--resume", help="continue an interrupted run")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="replace the gliotl run at --out (only once the new run's data are "
                        "checked; a folder holding other files is never replaced)")]
SetValues = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE",
    help="override one config value before it is checked (dotted key, YAML value; "
         "repeatable), e.g. --set train.finetune.epochs=5 --set seed=3")]
MlflowUri = Annotated[str | None, typer.Option(
    "--mlflow", metavar="URI",
    help="also log the finished run to this MLflow tracking URI (e.g. file:///tmp/mlruns); "
         "needs the gliotl[mlflow] extra")]


def log_to_mlflow(run, uri: str | None) -> None:
    """Log a finished run to MLflow when ``--mlflow`` was given, and say where."""
    if uri is None:
        return
    from gliotl.core.runs.mlflow_logging import log_run

    typer.echo(f"mlflow: logged {run.path.name} to {uri} as run {log_run(run, uri)}")


Force = Annotated[bool, typer.Option("--force", help="replace an existing --out file")]
PredictOut = Annotated[Path | None, typer.Option(
    "--out", help="CSV to write (default: print); never inside a run folder")]


def check_predict_out(out: Path | None, force: bool) -> None:
    """Refuse a predictions file that would replace one without ``--force`` or land in a run."""
    from gliotl.core.runs.rundir import inside_run
    from gliotl.errors import GliotlError

    if out is None:
        return
    run = inside_run(out)
    if run is not None:
        raise GliotlError(f"{out}: --out is inside the gliotl run {run}; write predictions "
                          "elsewhere (a run's files are its own)")
    if out.is_dir():
        raise GliotlError(f"{out}: --out is a folder; give a CSV file name")
    if out.exists() and not force:
        raise GliotlError(f"{out}: --out exists; pass --force to replace it")
ExecutorName = Annotated[str, typer.Option("--executor", help="local or ray")]
Workers = Annotated[int, typer.Option("--workers", min=1, help="local process-pool size")]
RayAddress = Annotated[
    str | None, typer.Option("--ray-address", help="auto, local or HOST:PORT (with ray)")
]
Retries = Annotated[int, typer.Option("--retries", min=0, help="retries of a failed job")]
SharedFs = Annotated[bool, typer.Option(
    "--shared-fs/--no-shared-fs",
    help="ray: every node mounts the run directory (default); without, each job's files are "
         "sent back to the driver",
)]


def build_executor(executor: str, workers: int, ray_address: str | None,
                   shared_fs: bool = True):
    """The executor the flags ask for (see :func:`gliotl.core.runs.jobs.make_executor`)."""
    from gliotl.core.runs.jobs import make_executor
    from gliotl.errors import GliotlError

    if executor != "ray":
        if not shared_fs:
            raise GliotlError("--no-shared-fs: only applies to --executor ray")
        return make_executor(executor, workers)
    options: dict = {"shared_fs": shared_fs}
    if ray_address:
        options["address"] = ray_address
    return make_executor(executor, workers, **options)
