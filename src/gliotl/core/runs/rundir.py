"""Run directories: one folder per experiment holding everything needed to audit and resume it.

Layout: ``config.yaml``, ``manifest.json``, ``splits.csv``, ``predictions.csv``, ``metrics.json``,
``report.html``, ``checkpoints/`` and ``jobs/<job_id>/`` (one folder per independent job; a job is
finished exactly when its ``result.json`` exists).

A folder is a gliotl run when its manifest carries the :data:`RUN_MARKER` field and every entry
in it is one a run writes (:func:`foreign_entries`); only such a folder is ever replaced
(``--overwrite``), and only after the new run's inputs were checked (:meth:`RunDir.commit`):
until then the old run waits beside it and comes back if the new one fails. An open run holds
an exclusive lock (``.gliotl.lock``), so two processes never run one folder at once.
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import os
import platform
import shutil
import socket
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from gliotl import __version__
from gliotl.core.io import TMP_SUFFIX, read_json, write_json, write_yaml
from gliotl.errors import GliotlError, input_error

TRACKED_PACKAGES = (
    "torch", "numpy", "pandas", "scipy", "scikit-learn", "monai", "nibabel", "pydantic", "ray",
)

RUN_MARKER = "gliotl_run"
"""The manifest field that says gliotl made this folder (its value: the run-format version)."""
RUN_FORMAT = 1
LOCK_FILE = ".gliotl.lock"

RUN_FILES = frozenset({
    "config.yaml", "manifest.json", "splits.csv", "predictions.csv", "metrics.json",
    "report.html", "cohort.csv", "cohort_summary.json", "source_selection.csv", "source_cv.csv",
    "nested_selection.csv", "history.csv", "policy_usage.csv", "splits_selection.csv",
    "cohort.exclusions.json", "tuning.csv", "permutation_null.csv", "routing.csv", "run.log",
    "model_card.md", "data_changes.json", LOCK_FILE,
    "panel_drugs.csv", "panel.csv", "panel_summary.csv", "panel_spearman.png",
})
RUN_FOLDERS = frozenset({"checkpoints", "jobs", "data", "cache", "cohort", "pretrain_cohort",
                         "figures", "drugs"})
"""Everything a run writes at its top level (``splits_source_<drug>.csv`` and temporary files
of an interrupted write aside); anything else in a folder means it holds the user's files."""


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


def _is_run_entry(entry: Path) -> bool:
    name = entry.name
    if entry.is_dir() and not entry.is_symlink():
        return name in RUN_FOLDERS
    return (name in RUN_FILES or (name.startswith("splits_source_") and name.endswith(".csv"))
            or (name.startswith(".") and name.endswith(TMP_SUFFIX)))


def foreign_entries(path: Path) -> list[str]:
    """Top-level entries of ``path`` that no gliotl run writes (sorted names)."""
    return sorted(entry.name for entry in path.iterdir() if not _is_run_entry(entry))


_LEGACY_KEYS = frozenset({
    "name", "gliotl_version", "git_commit", "packages", "python", "platform", "host", "user",
    "seed", "started", "finished", "status", "resumed",
})
"""Every field of a manifest written before the marker existed (all of them, together)."""


def is_run_manifest(manifest: Any) -> bool:
    """True for a manifest gliotl wrote: a JSON object with the run marker, or one with every
    field of the manifests gliotl wrote before it had the marker."""
    if not isinstance(manifest, dict):
        return False
    return manifest.get(RUN_MARKER) == RUN_FORMAT or (
        RUN_MARKER not in manifest and _LEGACY_KEYS <= set(manifest))


def read_run_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of the gliotl run at ``path``; None where nothing is there yet (no folder,
    or an empty one). Anything else at ``path`` is the user's, and an error says so."""
    if not path.exists():
        return None
    if not path.is_dir():
        raise GliotlError(f"{path}: is a file, not a run folder; pick another --out")
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        if any(path.iterdir()):
            raise GliotlError(f"{path}: folder exists and is not a gliotl run; "
                              "pick another --out")
        return None
    try:
        manifest = read_json(manifest_path)
    except GliotlError:
        manifest = None
    if not is_run_manifest(manifest):
        raise GliotlError(f"{manifest_path}: not a manifest gliotl wrote, so this folder is not "
                          "a gliotl run; pick another --out")
    return manifest


def inside_run(path: str | Path) -> Path | None:
    """The gliotl run folder that ``path`` lies in (at any depth), or None."""
    for folder in Path(path).resolve().parents:
        manifest = folder / "manifest.json"
        if manifest.is_file():
            try:
                if is_run_manifest(read_json(manifest)):
                    return folder
            except GliotlError:
                continue
    return None


def _refuse_foreign(path: Path) -> None:
    """Refuse a run folder that also holds files no run writes (they are the user's)."""
    foreign = foreign_entries(path)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise GliotlError(f"{path}: holds files that are not a gliotl run's ({shown}); "
                          "nothing was changed; move them or pick another --out")


def _refuse_existing(path: Path, status: Any) -> None:
    """A run is already at ``path`` and neither --resume nor --overwrite was given."""
    _refuse_foreign(path)
    if status == "finished":
        raise GliotlError(f"{path}: a finished run is there; --overwrite replaces it")
    raise GliotlError(
        f"{path}: an unfinished run is there; pass --resume to continue it "
        "or --overwrite to start again"
    )


_HELD: dict[str, list[int]] = {}
"""Run locks this process holds: folder -> [file descriptor, openers]. A process may reopen a
run it has open (the Python API, tests); another process may not."""


def _lock(path: Path) -> str:
    """Hold the run's exclusive lock (released by :func:`_unlock`, or when the process ends,
    however it ends); returns the key to release it with."""
    key = str(path.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        return key
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise GliotlError(f"{path}: another gliotl process has this run open; wait for it to "
                          "end (or pick another --out)") from None
    _HELD[key] = [fd, 1]
    return key


def _unlock(key: str | None) -> None:
    held = _HELD.get(key) if key is not None else None
    if key is None or held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _HELD[key]
        os.close(held[0])


def _rekey(key: str, path: Path) -> str:
    """The lock ``key`` now belongs to the folder renamed to ``path``."""
    new = str(path.resolve())
    _HELD[new] = _HELD.pop(key)
    return new


def _set_aside(path: Path) -> Path:
    """Rename the run at ``path`` to a hidden sibling until the new run replaces it."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f".{path.name}.replaced-{stamp}-{os.getpid()}")
    os.rename(path, aside)
    return aside


def _os_error(path: Path, exc: OSError) -> GliotlError:
    """A failure of the file system while opening a run, as one line."""
    where = exc.filename or path
    reason = exc.strerror or type(exc).__name__
    return input_error(where, None, f"cannot open the run folder ({reason}); check that "
                       "--out is a writable folder with free space and a short enough name")


class RunDir:
    """A run directory on disk. Create it with :meth:`open`; never construct a half-made one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock: str | None = None
        self._replaced: Path | None = None  # the old run, set aside until :meth:`commit`
        self._replaced_lock: str | None = None
        self._made: str | None = None  # "folder" / "contents": what abandon() removes

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
        """``jobs/<job_id>``; an id that would lead elsewhere is refused (ids come from names
        in the config, checked at load; this is the last guard)."""
        if (not job_id or job_id in (".", "..") or any(c in job_id for c in "/\\\0")):
            raise GliotlError(f"{self.path}: job id {job_id!r} is not a plain folder name")
        return self.jobs_dir / job_id

    def job_done(self, job_id: str, outputs: Sequence[str] = ()) -> bool:
        """Whether the job finished (its ``result.json``, written last) and every file it
        leaves for later steps (``outputs``) is still there."""
        folder = self.job_dir(job_id)
        return all((folder / name).is_file() for name in ("result.json", *outputs))

    # -- manifest ---------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        manifest = read_json(self.manifest_path)
        if not isinstance(manifest, dict):
            raise input_error(self.manifest_path, None, "expected a JSON object (a gliotl run's "
                              "manifest); this folder is not a readable run")
        return manifest

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.manifest()
        manifest.update(fields)
        write_json(self.manifest_path, manifest)

    def finish(self, status: str = "finished", **fields: Any) -> None:
        self.update_manifest(status=status, finished=_now(), **fields)

    def config(self) -> dict[str, Any]:
        try:
            config = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            config = None
        if not isinstance(config, dict):
            raise input_error(self.config_path, None, "missing or not a readable config mapping; "
                              "the run is damaged: run the experiment again in a new folder")
        return config

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
        try:
            run._open(name, config, seed, resume, overwrite)
        except OSError as exc:
            run.abandon()
            raise _os_error(path, exc) from None
        except BaseException:
            run.abandon()
            raise
        if not run.replacing:
            run._made = None  # a new run is kept from here on, whatever happens to it
        return run

    def _open(self, name: str, config: dict[str, Any], seed: int, resume: bool,
              overwrite: bool) -> None:
        manifest = read_run_manifest(self.path)
        if manifest is not None:
            status = manifest.get("status")
            if resume:
                self._lock = _lock(self.path)
                self._resume(status, config)
                return
            if not overwrite:
                _refuse_existing(self.path, status)
            _refuse_foreign(self.path)
            lock = _lock(self.path)
            try:
                self._replaced = _set_aside(self.path)
            except BaseException:
                _unlock(lock)
                raise
            self._replaced_lock = _rekey(lock, self._replaced)
        self._made = "contents" if self.path.is_dir() else "folder"
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.path)
        self._create(name, config, seed)

    # -- replacing, locking -----------------------------------------------------------------
    @property
    def replacing(self) -> bool:
        """True while an old run waits to be replaced by this one."""
        return self._replaced is not None

    def commit(self) -> None:
        """The new run's inputs are checked: delete the run it replaces, for good."""
        self._made = None
        if self._replaced is not None:
            shutil.rmtree(self._replaced)
            self._replaced = None
            _unlock(self._replaced_lock)
            self._replaced_lock = None

    def abandon(self) -> None:
        """This run stopped before :meth:`commit`: remove what this process made of it and put
        the run it replaces back; then release the lock."""
        self.close()
        made, self._made = self._made, None
        if made is not None and self.path.is_dir():
            for entry in ([self.path] if made == "folder" else list(self.path.iterdir())):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        if self._replaced is not None:
            os.rename(self._replaced, self.path)
            if self._replaced_lock is not None:
                _unlock(_rekey(self._replaced_lock, self.path))
            self._replaced = self._replaced_lock = None

    def close(self) -> None:
        """Release the run's lock."""
        _unlock(self._lock)
        self._lock = None

    def remove_stray_temporaries(self) -> list[Path]:
        """Delete temporary files that killed atomic writes left (``.<name>.<random>.tmp``)."""
        stray = [p for p in self.path.rglob(f".*{TMP_SUFFIX}") if p.is_file()]
        for path in stray:
            path.unlink()
        return stray

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
        self.remove_stray_temporaries()
        started = self.manifest().get("resumed", [])
        self.update_manifest(status="running", resumed=[*started, _now()],
                             **{RUN_MARKER: RUN_FORMAT})

    def _create(self, name: str, config: dict[str, Any], seed: int) -> None:
        """Make the folder and write the config and a fresh manifest."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)
        write_yaml(self.config_path, config)
        write_json(
            self.manifest_path,
            {
                RUN_MARKER: RUN_FORMAT,
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
