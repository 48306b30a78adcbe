"""Atomic file output: write to a temporary file in the same folder, then rename.

An interrupted process therefore leaves either the old file or the new one, never half of one.
Files get the mode the user's umask gives (``mkstemp`` alone would make them 0600, unreadable
to colleagues on a shared server), and a temporary file always ends with :data:`TMP_SUFFIX`,
so that a resumed run can sweep away the ones a killed write left.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gliotl.errors import GliotlError, input_error

TMP_SUFFIX = ".tmp"
"""Every temporary file :func:`atomic_path` makes is ``.<name>.<random>.tmp``."""


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` sets it,
    briefly, for every thread of the process)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it gets the umask's mode and is
    renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def copy_file(source: str | Path, dest: str | Path) -> Path:
    """Copy a file atomically (a half-copied checkpoint is never left at ``dest``)."""
    return write_bytes(dest, Path(source).read_bytes())


def json_safe(obj: Any) -> Any:
    """``obj`` with plain JSON types only, so that files are strict JSON that any parser reads:
    NaN / inf become null, numpy scalars and arrays become Python numbers and lists, paths
    become strings; containers are converted recursively (tuples become lists)."""
    import numpy as np

    if isinstance(obj, dict):
        return {json_safe(key) if isinstance(key, np.generic) else key: json_safe(value)
                for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(value) for value in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``json_safe(obj)`` atomically; anything else unknown to JSON is a TypeError."""
    return write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def write_yaml(path: str | Path, obj: Any) -> Path:
    return write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path: str | Path, frame: pd.DataFrame, index: bool = False) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)
    return Path(path)


def write_parquet(path: str | Path, frame: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp)
    return Path(path)


def save_torch(path: str | Path, obj: Any) -> Path:
    """Save tensors / state dicts atomically (loadable with ``weights_only=True``).

    torch names the zip's top folder after the file it writes; saving to memory first gives
    every checkpoint the same folder name, so one model always makes the same bytes."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue())


def load_torch(path: str | Path, map_location: str = "cpu") -> Any:
    """Load a checkpoint safely: tensors and plain containers only, never arbitrary objects."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "checkpoint file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise input_error(
            path, None, f"not a readable weights-only torch checkpoint ({first})"
        ) from None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise input_error(path, None, "file not found") from None
    except json.JSONDecodeError as exc:
        raise input_error(path, None, f"invalid JSON ({exc.msg} at line {exc.lineno})") from None


def read_table(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """Read CSV / TSV / TXT (tab) / Parquet / XLSX, optionally gzipped, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "file not found")
    name = path.name.lower().removesuffix(".gz")
    try:
        if name.endswith(".parquet"):
            frame = pd.read_parquet(path)
        elif name.endswith((".xlsx", ".xls")):
            frame = pd.read_excel(path, **kwargs)
        elif name.endswith((".tsv", ".txt", ".tab")):
            frame = pd.read_csv(path, sep="\t", **kwargs)
        else:
            frame = pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise input_error(path, None, "file is empty; expected a table with a header row") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise input_error(path, None, f"could not be parsed as a table ({first})") from None
    if frame.shape[0] == 0:
        raise input_error(path, None, "table has no rows")
    return frame


def require_columns(frame: pd.DataFrame, columns: list[str], source: str | Path) -> None:
    """Raise a one-line error naming the first missing column."""
    for column in columns:
        if column not in frame.columns:
            shown = ", ".join(map(str, list(frame.columns)[:8]))
            raise input_error(source, column, f"required column missing (found: {shown})")


__all__ = [
    "TMP_SUFFIX",
    "GliotlError",
    "atomic_path",
    "file_mode",
    "copy_file",
    "json_safe",
    "load_torch",
    "read_json",
    "read_table",
    "require_columns",
    "save_torch",
    "write_bytes",
    "write_csv",
    "write_json",
    "write_parquet",
    "write_text",
    "write_yaml",
]
