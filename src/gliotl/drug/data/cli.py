"""CLI: `gliotl data`."""

from __future__ import annotations

import typer

data_app = typer.Typer(
    help="Read, fetch and summarise drug-response datasets.", no_args_is_help=True
)
