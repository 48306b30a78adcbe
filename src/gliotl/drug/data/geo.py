"""GEO series: RNA-seq count matrix + series-matrix sample characteristics -> log2-CPM.

Counts are filtered like edgeR's ``filterByExpr``, library sizes TMM-normalised like edgeR's
``calcNormFactors(method="TMM")`` (Robinson & Oshlack 2010) and turned into log2-CPM with a
prior count like ``cpm(y, log=TRUE)``. All three re-implemented here in numpy from edgeR's
documented rules, because R is not a dependency.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from gliotl.core.io import read_table
from gliotl.drug.data._common import parse_number, to_numeric_frame
from gliotl.drug.data.dataset import DrugDataset
from gliotl.drug.data.harmonise import harmonise_expression, normalise_sample_key
from gliotl.errors import input_error

SYMBOL_COLUMNS = ("gene_name", "gene_symbol", "symbol", "genesymbol", "hgnc_symbol", "gene")


# ---------------------------------------------------------------- edgeR-equivalent numerics
def filter_by_expr(counts: np.ndarray, group: np.ndarray | None = None, min_count: float = 10,
                   min_total_count: float = 15, large_n: int = 10,
                   min_prop: float = 0.7) -> np.ndarray:
    """Genes-x-samples ``counts`` -> boolean keep mask, edgeR ``filterByExpr`` (no design).

    A gene is kept when its CPM reaches ``min_count / median(library size) * 1e6`` in at least
    ``n`` samples (``n`` = smallest group size, all samples without groups; above ``large_n``
    only ``min_prop`` of the excess counts) and its total count is at least ``min_total_count``.
    """
    counts = np.asarray(counts, dtype=float)
    lib_size = counts.sum(axis=0)
    if group is None:
        min_size = float(counts.shape[1])
    else:
        _, sizes = np.unique(np.asarray(group), return_counts=True)
        min_size = float(sizes.min())
    if min_size > large_n:
        min_size = large_n + (min_size - large_n) * min_prop
    cutoff = min_count / np.median(lib_size) * 1e6
    cpm = counts / lib_size * 1e6
    tol = 1e-14
    keep_cpm = (cpm >= cutoff).sum(axis=1) >= min_size - tol
    keep_total = counts.sum(axis=1) >= min_total_count - tol
    return keep_cpm & keep_total


def _tmm_factor(obs: np.ndarray, ref: np.ndarray, n_obs: float, n_ref: float,
                logratio_trim: float, sum_trim: float, weighting: bool) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        log_r = np.log2((obs / n_obs) / (ref / n_ref))
        abs_e = (np.log2(obs / n_obs) + np.log2(ref / n_ref)) / 2
        var = (n_obs - obs) / n_obs / obs + (n_ref - ref) / n_ref / ref
    finite = np.isfinite(log_r) & np.isfinite(abs_e)
    log_r, abs_e, var = log_r[finite], abs_e[finite], var[finite]
    if log_r.size == 0:
        return 1.0  # the libraries share no expressed gene: edgeR returns unity
    if np.max(np.abs(log_r)) < 1e-6:
        return 1.0
    n = log_r.size
    lo_l = np.floor(n * logratio_trim) + 1
    hi_l = n + 1 - lo_l
    lo_s = np.floor(n * sum_trim) + 1
    hi_s = n + 1 - lo_s
    rank_r, rank_e = rankdata(log_r), rankdata(abs_e)  # average ranks for ties, as R's rank()
    keep = (rank_r >= lo_l) & (rank_r <= hi_l) & (rank_e >= lo_s) & (rank_e <= hi_s)
    with np.errstate(invalid="ignore", divide="ignore"):  # ties can trim every gene: NaN -> 1
        if weighting:
            factor = np.sum(log_r[keep] / var[keep]) / np.sum(1 / var[keep])
        else:
            factor = np.mean(log_r[keep]) if keep.any() else np.nan
    return float(2 ** factor) if np.isfinite(factor) else 1.0


def tmm_factors(counts: np.ndarray, logratio_trim: float = 0.3, sum_trim: float = 0.05,
                weighting: bool = True, ref_column: int | None = None) -> np.ndarray:
    """TMM normalisation factors (one per sample, geometric mean 1), edgeR ``calcNormFactors``.

    The reference sample is the one whose upper-quartile (75th percentile of count / library
    size) is closest to the mean upper quartile; each sample's factor is the precision-weighted
    mean log-ratio against it after trimming 30% of log-ratios and 5% of mean abundances.
    """
    counts = np.asarray(counts, dtype=float)
    counts = counts[(counts > 0).any(axis=1)]
    lib_size = counts.sum(axis=0)
    if ref_column is None:
        upper = np.quantile(counts / lib_size, 0.75, axis=0)  # R's type-7 quantile
        if np.median(upper) < 1e-20:
            ref_column = int(np.argmax(np.sqrt(counts).sum(axis=0)))
        else:
            ref_column = int(np.argmin(np.abs(upper - upper.mean())))
    ref = counts[:, ref_column]
    factors = np.array([
        _tmm_factor(counts[:, j], ref, lib_size[j], lib_size[ref_column],
                    logratio_trim, sum_trim, weighting)
        for j in range(counts.shape[1])
    ])
    return factors / np.exp(np.mean(np.log(factors)))


def log_cpm(counts: np.ndarray, norm_factors: np.ndarray | None = None,
            prior_count: float = 2.0) -> np.ndarray:
    """log2 counts-per-million with edgeR's prior: scaled by library size, added twice to it."""
    counts = np.asarray(counts, dtype=float)
    lib_size = counts.sum(axis=0)
    if norm_factors is not None:
        lib_size = lib_size * np.asarray(norm_factors, dtype=float)
    prior = prior_count * lib_size / lib_size.mean()
    return np.log2((counts + prior) / (lib_size + 2 * prior) * 1e6)


# ---------------------------------------------------------------- files
def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _cells(line: str) -> list[str]:
    return [cell.strip().strip('"').strip() for cell in line.rstrip("\r\n").split("\t")[1:]]


def _column_key(key: str) -> str:
    """A characteristic key as a column name: lower case, runs of whitespace -> ``_``."""
    return re.sub(r"\s+", "_", key.strip().lower())


def _sample_lines(path: Path) -> tuple[dict[str, list[str]], list[list[str]]]:
    """The header's ``!Sample_*`` lines: first line per tag, and every characteristics line."""
    fields: dict[str, list[str]] = {}
    characteristics: list[list[str]] = []
    with _open_text(path) as handle:
        for line in handle:
            if line.startswith("!series_matrix_table_begin"):
                break
            if not line.startswith("!Sample_"):
                continue
            tag = line.split("\t", 1)[0][len("!Sample_"):].strip()
            if tag.startswith("characteristics"):
                characteristics.append(_cells(line))
            else:
                fields.setdefault(tag, _cells(line))
    return fields, characteristics


def _add_characteristics(table: pd.DataFrame, row: list[str], path: Path) -> None:
    """One ``!Sample_characteristics_ch1`` line's ``"key: value"`` cells into ``table``."""
    n = len(table)
    for i, cell in enumerate(row[:n]):
        if not cell:
            continue
        key, sep, value = cell.partition(":")
        if not sep:
            raise input_error(path, "!Sample_characteristics_ch1",
                              f"expected 'key: value', found '{cell}'")
        column = _column_key(key)
        if column not in table:
            table[column] = pd.Series([None] * n, dtype=object)
        table.loc[i, column] = value.strip()


def read_series_matrix(path: str | Path) -> pd.DataFrame:
    """``!Sample_*`` header lines -> one row per sample (title, geo_accession, characteristics).

    ``!Sample_characteristics_ch1`` repeats, one line per characteristic, each cell
    ``"key: value"``; keys become lower-case column names (spaces -> ``_``).
    """
    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "file not found")
    fields, characteristics = _sample_lines(path)
    if "geo_accession" not in fields:
        raise input_error(path, "!Sample_geo_accession", "series-matrix header line missing")
    n = len(fields["geo_accession"])
    table = pd.DataFrame({"geo_accession": fields["geo_accession"]})
    table["title"] = fields.get("title", fields["geo_accession"])[:n]
    for row in characteristics:
        _add_characteristics(table, row, path)
    return table


def _mgmt(value: object) -> object:
    if value is None or pd.isna(value):
        return pd.NA
    text = str(value).strip().lower()
    if text.startswith("unmethyl") or text in ("u", "um", "negative", "neg"):
        return "unmethylated"
    if text.startswith("methyl") or text in ("m", "positive", "pos"):
        return "methylated"
    return pd.NA


def _count_matrix(frame: pd.DataFrame, path: Path,
                  gene_column: str | None) -> tuple[pd.DataFrame, pd.Series]:
    """Genes x samples counts and their gene IDs; text columns and unnamed genes dropped."""
    lower = {str(c).strip().lower(): c for c in frame.columns}
    if gene_column is None:
        gene_column = next((lower[c] for c in SYMBOL_COLUMNS if c in lower), frame.columns[0])
    elif gene_column not in frame.columns:
        raise input_error(path, gene_column, "gene column missing")
    text_columns = [c for c in frame.columns if c != gene_column
                    and not pd.api.types.is_numeric_dtype(frame[c])
                    and pd.to_numeric(frame[c], errors="coerce").isna().all()]
    sample_columns = [c for c in frame.columns if c != gene_column and c not in text_columns]
    if not sample_columns:
        raise input_error(path, None, "no count columns found; expected genes x samples")
    counts = to_numeric_frame(frame[sample_columns], path, "counts")
    if (counts < 0).any().any():
        column = counts.columns[(counts < 0).any()][0]
        raise input_error(path, str(column), "expected non-negative counts")
    genes = frame[gene_column].astype(str).str.strip()
    named = frame[gene_column].notna() & (genes != "")
    return counts[named].fillna(0.0), genes[named]


def _match_samples(counts: pd.DataFrame, meta: pd.DataFrame, counts_path: Path,
                   series_matrix_path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Count columns renamed to sample IDs (by title or GSM accession), replicates summed."""
    lookup = {normalise_sample_key(v): sid for col in ("title", "geo_accession")
              for v, sid in zip(meta[col], meta["sample_id"], strict=True)}
    matched = {c: lookup.get(normalise_sample_key(c)) for c in counts.columns}
    if not any(matched.values()):
        raise input_error(counts_path, "sample columns",
                          f"no column matches a sample title or GSM accession of "
                          f"{series_matrix_path} (e.g. '{counts.columns[0]}')")
    notes = [f"count column '{c}' has no series-matrix sample; dropped"
             for c, sid in matched.items() if sid is None]
    counts = counts[[c for c, sid in matched.items() if sid]]
    counts.columns = [matched[c] for c in counts.columns]
    counts = counts.T.groupby(level=0, sort=False).sum().T  # technical replicate columns
    return counts, notes


def _add_mgmt(samples: pd.DataFrame, mgmt_key: str | None, path: Path) -> None:
    """``mgmt_status`` from the given (or the first ``*mgmt*``) characteristic, if any."""
    key = mgmt_key or next((c for c in samples.columns if "mgmt" in c), None)
    if key is None:
        return
    key = _column_key(key)
    if key not in samples:
        raise input_error(path, key, "MGMT characteristic missing")
    samples["mgmt_status"] = samples[key].map(_mgmt)


def _response_rows(samples: pd.DataFrame, measure: str, characteristic: str, drug: str,
                   path: Path) -> list[dict[str, object]]:
    """One long-format response row per sample for one measure's characteristic."""
    column = _column_key(characteristic)
    if column not in samples:
        raise input_error(path, characteristic,
                          "characteristic not found in !Sample_characteristics_ch1")
    rows = []
    for sid, raw in samples[column].items():
        try:
            value = parse_number(raw)
        except ValueError:
            raise input_error(path, characteristic,
                              f"expected a number, found '{raw}'") from None
        rows.append({"sample_id": sid, "drug": drug, "measure": measure, "value": value})
    return rows


def read_geo(
    counts_path: str | Path,
    series_matrix_path: str | Path,
    responses: Mapping[str, str] | None = None,
    drug: str = "Temozolomide",
    mgmt_key: str | None = None,
    gene_column: str | None = None,
    min_count: float = 10,
    min_total_count: float = 15,
    prior_count: float = 2.0,
    name: str = "GEO",
) -> DrugDataset:
    """Read counts + series matrix; ``responses`` maps measure -> characteristic key.

    e.g. ``{"AUC": "tmz auc", "IC50": "tmz ic50", "viability": "viability 100um"}``. Sample IDs
    are the normalised titles; counts columns may use titles or GSM accessions. As in edgeR's
    ``y[keep, , keep.lib.sizes=FALSE]``, library sizes are recomputed over the kept genes.
    """
    counts_path, series_matrix_path = Path(counts_path), Path(series_matrix_path)
    counts, genes = _count_matrix(read_table(counts_path), counts_path, gene_column)
    meta = read_series_matrix(series_matrix_path)
    meta["sample_id"] = meta["title"].map(normalise_sample_key)
    counts, notes = _match_samples(counts, meta, counts_path, series_matrix_path)
    values = counts.to_numpy()
    keep = filter_by_expr(values, min_count=min_count, min_total_count=min_total_count)
    notes.append(f"filterByExpr kept {int(keep.sum())} of {len(keep)} genes")
    if not keep.any():
        raise input_error(counts_path, None, "no gene passes the low-count filter")
    factors = tmm_factors(values[keep])
    logged = log_cpm(values[keep], factors, prior_count)
    expression = pd.DataFrame(logged.T, index=counts.columns, columns=genes[keep].to_numpy())
    expression, merged = harmonise_expression(expression)
    if merged:
        notes.append(f"{merged} duplicate gene IDs averaged")

    samples = meta.set_index("sample_id")
    samples["tmm_factor"] = pd.Series(factors, index=counts.columns)
    _add_mgmt(samples, mgmt_key, series_matrix_path)
    rows = [row for measure, characteristic in (responses or {}).items()
            for row in _response_rows(samples, measure, characteristic, drug,
                                      series_matrix_path)]
    response = pd.DataFrame(rows, columns=["sample_id", "drug", "measure", "value"])
    response = response.dropna(subset=["value"]).assign(source=name)
    return DrugDataset(name=name, expression=expression, response=response, samples=samples,
                       notes=notes)
