"""CLI: `gliotl drug`."""

from __future__ import annotations

import typer

drug_app = typer.Typer(help="Run N-step transfer-learning experiments for drug response.", no_args_is_help=True)
