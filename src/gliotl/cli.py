"""The ``gliotl`` command: a thin Typer layer over the Python API.

Sub-commands live next to the code they drive (``gliotl.drug.data.cli``, ``gliotl.drug.cli``,
``gliotl.mgmt.cli``); heavy imports (torch, MONAI) happen inside commands so ``--help`` is fast.
User mistakes (:class:`gliotl.errors.GliotlError`) print one line and exit with status 2.
"""

from __future__ import annotations

import sys

import typer

from gliotl import __version__
from gliotl.errors import GliotlError

app = typer.Typer(
    name="gliotl",
    help="Transfer learning for small glioblastoma datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gliotl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    """Transfer learning for small glioblastoma datasets."""


def _register() -> None:
    from gliotl.drug.cli import drug_app
    from gliotl.drug.data.cli import data_app
    from gliotl.mgmt.cli import mgmt_app

    app.add_typer(data_app, name="data")
    app.add_typer(drug_app, name="drug")
    app.add_typer(mgmt_app, name="mgmt")
    try:
        from gliotl.demo import demo_command
    except ImportError:
        return
    app.command("demo")(demo_command)


_register()


def main() -> None:
    try:
        app()
    except GliotlError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted; rerun with --resume to continue", err=True, fg="yellow")
        sys.exit(130)
