"""Dataset specs (one YAML mapping per dataset, discriminated by ``kind``) and ``load_dataset``.

Paths in a spec are :data:`~gliotl.core.config.ConfigPath`: relative ones resolve against the
folder of the config file that holds the spec (``base_dir``), so a config works from wherever it
is run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args, overload

from pydantic import Field, TypeAdapter, ValidationError

from gliotl.core.config import (
    ConfigPath,
    StrictModel,
    format_validation_error,
    load_yaml,
    resolve_config_paths,
)
from gliotl.drug.data.dataset import DrugDataset

Orientation = Literal["auto", "genes_by_samples", "samples_by_genes"]


class GdscReleaseSpec(StrictModel):
    kind: Literal["gdsc_release"]
    name: str = "GDSC"
    response_paths: list[ConfigPath] = Field(min_length=1)
    expression_path: ConfigPath
    cell_lines_path: ConfigPath | None = None
    measures: list[str] = ["AUC", "LN_IC50"]


class GdscPypiSpec(StrictModel):
    kind: Literal["gdsc_pypi"]
    name: str = "GDSC"
    cache_dir: ConfigPath | None = None


class HgccSpec(StrictModel):
    kind: Literal["hgcc"]
    name: str = "HGCC"
    expression_path: ConfigPath
    response_path: ConfigPath
    orientation: Orientation = "auto"
    sample_column: str | None = None
    response_prefix: str = "AUC_"
    measure: str = "AUC"


class GeoSpec(StrictModel):
    kind: Literal["geo"]
    name: str = "GEO"
    counts_path: ConfigPath
    series_matrix_path: ConfigPath
    responses: dict[str, str] = {}
    drug: str = "Temozolomide"
    mgmt_key: str | None = None
    gene_column: str | None = None
    min_count: float = Field(10, ge=0)
    min_total_count: float = Field(15, ge=0)
    prior_count: float = Field(2.0, gt=0)


class DrevalpySpec(StrictModel):
    kind: Literal["drevalpy"]
    name: str | None = None
    path: ConfigPath
    dataset_name: str | None = None
    measures: list[str] | None = None


class TableSpec(StrictModel):
    kind: Literal["table"]
    name: str = "table"
    expression_path: ConfigPath
    response_path: ConfigPath
    sample_column: str
    expression_orientation: Literal["samples_by_genes", "genes_by_samples"] = "samples_by_genes"
    expression_id_column: str | None = None
    drug_column: str | None = None
    drug: str | None = None
    measure_column: str | None = None
    value_column: str | None = None
    value_columns: dict[str, str] | None = None
    samples_path: ConfigPath | None = None
    samples_id_column: str | None = None
    annotations: dict[str, str] | None = None
    normalise_keys: bool = True


DatasetSpec = Annotated[
    GdscReleaseSpec | GdscPypiSpec | HgccSpec | GeoSpec | DrevalpySpec | TableSpec,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter = TypeAdapter(DatasetSpec)
_BY_KIND = {get_args(m.model_fields["kind"].annotation)[0]: m for m in
            (GdscReleaseSpec, GdscPypiSpec, HgccSpec, GeoSpec, DrevalpySpec, TableSpec)}


def spec_model(kind: Any) -> type[StrictModel] | None:
    """The spec model of a dataset ``kind`` (None when no kind has that name)."""
    return _BY_KIND.get(kind) if isinstance(kind, str) else None


def parse_spec(data: dict[str, Any] | Any, source: str | Path = "<dataset spec>",
               base_dir: str | Path | None = None) -> Any:
    """Validate a raw mapping into the matching spec model (one-line error on failure); with
    ``base_dir``, relative paths resolve against it."""
    if isinstance(data, StrictModel):
        return data if base_dir is None else resolve_config_paths(data, base_dir)
    model = spec_model(data.get("kind")) if isinstance(data, dict) else None
    context = {"base_dir": Path(base_dir)} if base_dir is not None else None
    try:
        # validating against the matching model keeps error locations free of the tag
        if model is not None:
            return model.model_validate(data, context=context)
        return _ADAPTER.validate_python(data, context=context)
    except ValidationError as exc:
        raise format_validation_error(exc, source) from None


def load_spec_file(path: str | Path) -> Any:
    """A YAML file holding one dataset spec; its paths are relative to the file's folder."""
    return parse_spec(load_yaml(path), path, base_dir=Path(path).resolve().parent)


@overload
def _path(value: str) -> Path: ...
@overload
def _path(value: str | None) -> Path | None: ...
def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def load_dataset(spec: Any, base_dir: str | Path | None = None) -> DrugDataset:
    """Read the dataset a spec (model or raw mapping) describes; relative paths resolve
    against ``base_dir`` (default: as given)."""
    spec = parse_spec(spec, base_dir=base_dir)
    r = _path

    if isinstance(spec, GdscReleaseSpec):
        from gliotl.drug.data.gdsc import read_gdsc_release

        return read_gdsc_release([r(p) for p in spec.response_paths], r(spec.expression_path),
                                 r(spec.cell_lines_path), spec.measures, spec.name)
    if isinstance(spec, GdscPypiSpec):
        from gliotl.drug.data.pypi import load_gdsc_pypi

        return load_gdsc_pypi(r(spec.cache_dir), spec.name)
    if isinstance(spec, HgccSpec):
        from gliotl.drug.data.hgcc import read_hgcc

        return read_hgcc(r(spec.expression_path), r(spec.response_path), spec.orientation,
                         spec.sample_column, spec.response_prefix, spec.measure, spec.name)
    if isinstance(spec, GeoSpec):
        from gliotl.drug.data.geo import read_geo

        return read_geo(r(spec.counts_path), r(spec.series_matrix_path), spec.responses,
                        spec.drug, spec.mgmt_key, spec.gene_column, spec.min_count,
                        spec.min_total_count, spec.prior_count, spec.name)
    if isinstance(spec, DrevalpySpec):
        from gliotl.drug.data.drevalpy import read_drevalpy

        dataset = read_drevalpy(r(spec.path), spec.dataset_name, spec.measures)
        if spec.name:
            dataset.name = spec.name
        return dataset
    from gliotl.drug.data.table import read_table_dataset

    resolved = {field: r(getattr(spec, field))
                for field in ("expression_path", "response_path", "samples_path")}
    return read_table_dataset(spec.model_copy(update=resolved))
