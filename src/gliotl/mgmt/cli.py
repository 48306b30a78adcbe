"""CLI: `gliotl mgmt`."""

from __future__ import annotations

import typer

mgmt_app = typer.Typer(help="MGMT methylation from MRI: cohorts, preprocessing, SpotTune experiments.", no_args_is_help=True)
