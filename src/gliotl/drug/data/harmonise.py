"""Cross-platform harmonisation: gene symbols, gene alignment policies, sample-name keys.

Datasets from different platforms name the same gene or cell line differently (``tp53`` /
``TP53``, ``ENSG00000141510.17`` / ``ENSG00000141510``, ``U-87-MG`` / ``U87MG``). Everything
here turns names into comparable keys and reports what it merged, kept or filled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import pandas as pd

from gliotl.drug.data.dataset import DrugDataset
from gliotl.errors import GliotlError

_ENSEMBL_VERSIONED = re.compile(r"^(ENS[A-Z]*[GTPE]\d{6,})\.\d+$")
_NON_ALNUM = re.compile(r"[^0-9a-z]")
_HGCC_CULTURE = re.compile(r"^(u\d+)mg$")


def normalise_gene_symbol(name: object) -> str:
    """Upper-case, trimmed symbol; an Ensembl ID loses its ``.<version>``.

    Only Ensembl IDs lose a dotted suffix: in a symbol the dot is part of the name
    (e.g. ``RP11-34P13.7``), so stripping it there would merge different genes.
    """
    text = str(name).strip().upper()
    match = _ENSEMBL_VERSIONED.match(text)
    return match.group(1) if match else text


def harmonise_expression(expression: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Normalise gene columns and average columns that become the same symbol.

    Returns the new frame and how many columns were merged away. Empty / missing symbols are
    dropped by the readers before this point.
    """
    symbols = [normalise_gene_symbol(c) for c in expression.columns]
    frame = expression.set_axis(symbols, axis=1).astype(float)
    merged = len(symbols) - len(set(symbols))
    if merged:
        frame = frame.T.groupby(level=0, sort=False).mean().T
    frame.columns.name = None
    return frame, merged


def given_symbols(columns: Iterable[object]) -> dict[str, str]:
    """Harmonised symbol -> the symbol as given, for symbols that harmonisation changed and
    that only one given column became (merged columns have no single given name)."""
    given: dict[str, list[str]] = {}
    for column in columns:
        given.setdefault(normalise_gene_symbol(column), []).append(str(column))
    return {symbol: names[0] for symbol, names in given.items()
            if len(names) == 1 and names[0] != symbol}


def normalise_sample_key(name: object, drop_culture_suffix: bool = False) -> str:
    """Lower-case alphanumerics only, so ``U-87-MG``, ``U87 MG`` and ``u87mg`` are one key.

    ``drop_culture_suffix`` also turns HGCC culture names ``U3065MG`` into ``u3065``; it is off by
    default because for other collections the ``MG`` is part of the name (``U87MG`` is not ``U87``).
    """
    key = _NON_ALNUM.sub("", str(name).strip().lower())
    if drop_culture_suffix:
        match = _HGCC_CULTURE.match(key)
        if match:
            key = match.group(1)
    return key


def key_samples(names: Iterable[object], drop_culture_suffix: bool = False) -> tuple[
    dict[str, str], dict[str, list[str]]
]:
    """Map raw names to keys; ``collisions`` lists keys that several distinct raw names share."""
    mapping: dict[str, str] = {}
    by_key: dict[str, list[str]] = {}
    for name in names:
        if pd.isna(name):
            continue
        raw = str(name)
        key = normalise_sample_key(raw, drop_culture_suffix)
        mapping[raw] = key
        if raw not in by_key.setdefault(key, []):
            by_key[key].append(raw)
    collisions = {k: v for k, v in by_key.items() if len(v) > 1}
    return mapping, collisions


@dataclass
class SampleMatch:
    """Which names of two collections denote the same sample, and what could not be matched."""

    pairs: pd.DataFrame  # columns key, left, right
    left_only: list[str]
    right_only: list[str]
    collisions: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> str:
        text = (f"{len(self.pairs)} matched, {len(self.left_only)} only left, "
                f"{len(self.right_only)} only right")
        if self.collisions:
            shown = "; ".join(f"{k}: {' / '.join(v)}" for k, v in list(self.collisions.items())[:5])
            text += f", {len(self.collisions)} name collisions ({shown})"
        return text


def match_samples(left: Iterable[object], right: Iterable[object],
                  drop_culture_suffix: bool = False) -> SampleMatch:
    """Match two name lists on the normalised key; collisions on either side are reported."""
    left_map, left_coll = key_samples(left, drop_culture_suffix)
    right_map, right_coll = key_samples(right, drop_culture_suffix)
    left_keys: dict[str, str] = {}
    for raw, key in left_map.items():
        left_keys.setdefault(key, raw)
    right_keys: dict[str, str] = {}
    for raw, key in right_map.items():
        right_keys.setdefault(key, raw)
    common = [k for k in left_keys if k in right_keys]
    pairs = pd.DataFrame({"key": common, "left": [left_keys[k] for k in common],
                          "right": [right_keys[k] for k in common]})
    collisions = {**{f"left:{k}": v for k, v in left_coll.items()},
                  **{f"right:{k}": v for k, v in right_coll.items()}}
    return SampleMatch(
        pairs=pairs,
        left_only=[left_keys[k] for k in left_keys if k not in right_keys],
        right_only=[right_keys[k] for k in right_keys if k not in left_keys],
        collisions=collisions,
    )


@dataclass
class GeneAlignment:
    """What a gene-alignment policy did to each dataset."""

    policy: str
    n_genes: int
    per_dataset: dict[str, dict[str, int]]

    def to_dict(self) -> dict:
        return {"policy": self.policy, "n_genes": self.n_genes, "per_dataset": self.per_dataset}


def _shared_genes(datasets: Sequence[DrugDataset], reference: list[str]) -> list[str]:
    """The ``reference`` genes every dataset has, in reference order; none shared is an error."""
    present = set(reference)
    for ds in datasets:
        present &= set(ds.expression.columns)
    target = [g for g in reference if g in present]
    if not target:
        names = ", ".join(ds.name for ds in datasets)
        raise GliotlError(f"align_genes: field 'genes': datasets {names} share no gene "
                          "symbol; expected gene symbols as expression columns")
    return target


def _align_one(ds: DrugDataset, target: list[str], policy: str,
               fill_value: float) -> tuple[DrugDataset, dict[str, int]]:
    """One dataset reindexed to ``target`` (missing genes filled under ``fill``) + its counts."""
    have = set(ds.expression.columns)
    kept = sum(1 for g in target if g in have)
    expression = ds.expression.reindex(columns=target)
    if policy == "fill":
        expression = expression.fillna(
            {g: fill_value for g in target if g not in have}
        )
    counts = {
        "genes_in": int(ds.expression.shape[1]),
        "kept": int(kept),
        "filled": int(len(target) - kept) if policy == "fill" else 0,
        "dropped": int(len(have - set(target))),
    }
    return replace(ds, expression=expression), counts


def align_genes(
    datasets: Sequence[DrugDataset],
    policy: Literal["intersection", "fill"] = "intersection",
    genes: Sequence[str] | None = None,
    fill_value: float = 0.0,
) -> tuple[list[DrugDataset], GeneAlignment]:
    """Give every dataset the same gene columns in the same order.

    ``intersection``: genes present in every dataset (and in ``genes`` if given), in the order of
    ``genes`` or else of the first dataset. ``fill`` (the paper's choice): the gene list is
    ``genes`` or else the first dataset's genes; a gene missing from a dataset is filled with
    ``fill_value`` (0, as the paper did); the report counts how many were filled per dataset.
    """
    if not datasets:
        raise GliotlError("align_genes: field 'datasets': expected at least one dataset")
    if policy not in ("intersection", "fill"):
        raise GliotlError(f"align_genes: field 'policy': expected 'intersection' or 'fill', "
                          f"got '{policy}'")
    if genes is not None:
        reference = list(dict.fromkeys(normalise_gene_symbol(g) for g in genes))
    else:
        reference = list(datasets[0].expression.columns)
    target = _shared_genes(datasets, reference) if policy == "intersection" else reference
    aligned: list[DrugDataset] = []
    report: dict[str, dict[str, int]] = {}
    for ds in datasets:
        one, report[ds.name] = _align_one(ds, target, policy, fill_value)
        aligned.append(one)
    return aligned, GeneAlignment(policy=policy, n_genes=len(target), per_dataset=report)
