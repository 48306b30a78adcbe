"""The in-memory form every reader returns: expression, long response table, sample annotations."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gliotl.errors import GliotlError

RESPONSE_COLUMNS = ["sample_id", "drug", "measure", "value", "source"]


@dataclass
class DrugDataset:
    """One drug-response dataset on a single platform.

    ``expression``: samples x genes (index ``sample_id``, gene-symbol columns, floats).
    ``response``: long table ``sample_id, drug, measure, value, source`` (``source`` tells apart
    releases of the same measure, e.g. GDSC1 / GDSC2; extra columns such as ``drug_id`` may follow).
    ``samples``: annotations indexed by ``sample_id`` (tissue, tissue_sub_type, mgmt_status, ...).
    ``notes``: what the reader noticed and resolved (name collisions, dropped rows), for summaries.
    ``gene_symbols``: the symbol as the source spelled it, by expression column, where
    harmonisation changed it (``C16orf74`` for ``C16ORF74``), so exports can give it back.
    """

    name: str
    expression: pd.DataFrame
    response: pd.DataFrame
    samples: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    gene_symbols: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.expression.index = self.expression.index.astype(str)
        self.expression.index.name = "sample_id"
        self.expression.columns = self.expression.columns.astype(str)
        if self.expression.index.has_duplicates:
            dup = self.expression.index[self.expression.index.duplicated()][0]
            raise GliotlError(f"dataset '{self.name}': sample '{dup}' has two expression rows")
        response = self.response.copy()
        if "source" not in response.columns:
            response["source"] = self.name
        missing = [c for c in RESPONSE_COLUMNS if c not in response.columns]
        if missing:
            raise GliotlError(f"dataset '{self.name}': response table lacks column '{missing[0]}'")
        response["sample_id"] = response["sample_id"].astype(str)
        response["value"] = pd.to_numeric(response["value"], errors="coerce").astype(float)
        extra = [c for c in response.columns if c not in RESPONSE_COLUMNS]
        self.response = response[RESPONSE_COLUMNS + extra].reset_index(drop=True)
        samples = self.samples.copy()
        samples.index = samples.index.astype(str)
        samples.index.name = "sample_id"
        known = set(samples.index)
        others = [s for s in pd.unique(np.concatenate([self.expression.index.to_numpy(),
                                                        self.response["sample_id"].to_numpy()]))
                  if s not in known]
        if others:
            samples = pd.concat([samples, pd.DataFrame(index=pd.Index(others, name="sample_id"))])
        self.samples = samples

    @property
    def genes(self) -> list[str]:
        return list(self.expression.columns)

    @property
    def sample_ids(self) -> list[str]:
        return list(self.expression.index)

    def drugs(self) -> list[str]:
        return sorted(self.response["drug"].astype(str).unique())

    def measures(self) -> list[str]:
        return sorted(self.response["measure"].astype(str).unique())

    def sources(self) -> list[str]:
        return sorted(self.response["source"].astype(str).unique())

    def _resolve(self, column: str, wanted: str) -> str:
        """Exact match first, then case-insensitive (users type 'temozolomide')."""
        values = self.response[column].astype(str).unique()
        if wanted in values:
            return wanted
        folded = [v for v in values if v.casefold() == wanted.casefold()]
        if len(folded) == 1:
            return folded[0]
        shown = ", ".join(sorted(values)[:10])
        raise GliotlError(
            f"dataset '{self.name}': field '{column}': no '{wanted}' in the response table "
            f"(available: {shown}{', ...' if len(values) > 10 else ''})"
        )

    def response_rows(self, drug: str, measure: str, source: str | None = None) -> pd.DataFrame:
        """The measured response rows of one drug and measure for samples with expression."""
        table = self.response
        rows = (table["drug"].astype(str) == self._resolve("drug", drug)) & (
            table["measure"].astype(str) == self._resolve("measure", measure)
        )
        if source is not None:
            rows &= table["source"].astype(str) == self._resolve("source", source)
        chosen = table.loc[rows & table["value"].notna()]
        return chosen[chosen["sample_id"].isin(self.expression.index)]

    def responses(self, drug: str, measure: str, source: str | None = None) -> pd.Series:
        """One response per sample with expression; repeated measurements are averaged."""
        chosen = self.response_rows(drug, measure, source)
        series = chosen.groupby("sample_id", sort=False)["value"].mean()
        order = [s for s in self.expression.index if s in series.index]
        series = series.reindex(order).astype(float)
        series.index.name = "sample_id"
        series.name = f"{drug}:{measure}" + (f":{source}" if source else "")
        return series

    def subset(self, sample_ids: Iterable[str]) -> DrugDataset:
        """The same dataset restricted to ``sample_ids`` (in that order); unknown ids are errors."""
        ids = [str(s) for s in sample_ids]
        unknown = [s for s in ids if s not in self.samples.index]
        if unknown:
            raise GliotlError(f"dataset '{self.name}': unknown sample_id '{unknown[0]}'")
        in_expr = [s for s in ids if s in self.expression.index]
        response = self.response[self.response["sample_id"].isin(set(ids))]
        return DrugDataset(
            name=self.name,
            expression=self.expression.loc[in_expr].copy(),
            response=response.copy(),
            samples=self.samples.loc[ids].copy(),
            notes=list(self.notes),
            gene_symbols=dict(self.gene_symbols),
        )
