"""Run directories: one folder per experiment holding everything needed to audit and resume it.

Layout: ``config.yaml``, ``manifest.json``, ``splits.csv``, ``predictions.csv``, ``metrics.json``,
``report.html``, ``checkpoints/`` and ``jobs/<job_id>/`` (one folder per independent job; a job is
finished exactly when its ``result.json`` exists).
"""

from __future__ import annotations

import getpass
import platform
import shutil
import socket
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from gliotl import __version__
from gliotl.core.io import read_json, write_json, write_yaml
from gliotl.errors import GliotlError

TRACKED_PACKAGES = (
    "torch", "numpy", "pandas", "scipy", "scikit-learn", "monai", "nibabel", "pydantic", "ray",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """The commit of the gliotl source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            diff = _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if diff:
                return diff
        return None
    return None if old == new else prefix.rstrip(".") or "<root>"


def _run_path(name: str, out: str | Path | None, resume: bool, root: str | Path) -> Path:
    """``out`` if given; else the latest ``<root>/<name>-*`` to resume, or a new stamped one."""
    if out is not None:
        return Path(out)
    if not resume:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path(root) / f"{name}-{stamp}"
    candidates = sorted(Path(root).glob(f"{name}-*"))
    if not candidates:
        raise GliotlError(f"--resume: no earlier run named '{name}' under {root}/")
    return candidates[-1]


def _refuse_existing(path: Path, status: Any) -> None:
    """A run is already at ``path`` and neither --resume nor --overwrite was given."""
    if status == "finished":
        raise GliotlError(f"{path}: a finished run is there; --overwrite replaces it")
    raise GliotlError(
        f"{path}: an unfinished run is there; pass --resume to continue it "
        "or --overwrite to start again"
    )


class RunDir:
    """A run directory on disk. Create it with :meth:`open`; never construct a half-made one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- well-known files -------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def splits_path(self) -> Path:
        return self.path / "splits.csv"

    @property
    def predictions_path(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def jobs_dir(self) -> Path:
        return self.path / "jobs"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def job_done(self, job_id: str) -> bool:
        return (self.job_dir(job_id) / "result.json").is_file()

    # -- manifest ---------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return read_json(self.manifest_path)

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.manifest()
        manifest.update(fields)
        write_json(self.manifest_path, manifest)

    def finish(self, status: str = "finished", **fields: Any) -> None:
        self.update_manifest(status=status, finished=_now(), **fields)

    def config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_path.read_text(encoding="utf-8"))

    # -- creation / resumption --------------------------------------------------------------
    @classmethod
    def open(
        cls,
        name: str,
        config: dict[str, Any],
        seed: int,
        out: str | Path | None = None,
        resume: bool = False,
        overwrite: bool = False,
        root: str | Path = "runs",
    ) -> RunDir:
        """Create a new run, or reopen an unfinished one with ``resume=True``.

        A finished run is never replaced unless ``overwrite=True``; resuming checks that the
        config is the one the run started with, so a resumed run cannot mix two experiments.
        """
        path = _run_path(name, out, resume, root)
        run = cls(path)
        if run.manifest_path.is_file():
            status = run.manifest().get("status")
            if overwrite:
                shutil.rmtree(path)
            elif resume:
                run._resume(status, config)
                return run
            else:
                _refuse_existing(path, status)
        elif path.exists() and any(path.iterdir()):
            raise GliotlError(f"{path}: folder exists and is not a gliotl run; pick another --out")
        run._create(name, config, seed)
        return run

    def _resume(self, status: Any, config: dict[str, Any]) -> None:
        """Reopen an unfinished run whose config is ``config``; log the resumption."""
        if status == "finished":
            raise GliotlError(f"{self.path}: run already finished; pass --overwrite to redo it")
        diff = _first_difference(self.config(), yaml.safe_load(yaml.safe_dump(config)))
        if diff is not None:
            raise GliotlError(
                f"{self.path / 'config.yaml'}: field '{diff}' differs from the config given; "
                "resume with the run's own config or start a new run"
            )
        started = self.manifest().get("resumed", [])
        self.update_manifest(status="running", resumed=[*started, _now()])

    def _create(self, name: str, config: dict[str, Any], seed: int) -> None:
        """Make the folder and write the config and a fresh manifest."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)
        write_yaml(self.config_path, config)
        write_json(
            self.manifest_path,
            {
                "name": name,
                "gliotl_version": __version__,
                "git_commit": git_commit(),
                "packages": package_versions(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "host": socket.gethostname(),
                "user": getpass.getuser(),
                "seed": seed,
                "started": _now(),
                "finished": None,
                "status": "running",
                "resumed": [],
            },
        )
