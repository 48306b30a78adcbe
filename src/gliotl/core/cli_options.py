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
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace a finished run")]
ExecutorName = Annotated[str, typer.Option("--executor", help="local or ray")]
Workers = Annotated[int, typer.Option("--workers", help="local process-pool size")]
RayAddress = Annotated[
    str | None, typer.Option("--ray-address", help="auto, local or HOST:PORT (with ray)")
]
Retries = Annotated[int, typer.Option("--retries", help="retries of a failed job")]
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
