"""CLI: `gliotl mgmt`."""

from __future__ import annotations

from pathlib import Path

import typer

mgmt_app = typer.Typer(
    help="MGMT methylation from MRI: cohorts, preprocessing, SpotTune experiments.",
    no_args_is_help=True,
)


def _parse_shape(text: str) -> tuple[int, int, int]:
    from gliotl.errors import GliotlError

    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 16:
        raise GliotlError(f"--shape: three integers >= 16 like 96,96,64 expected, got '{text}'")
    return shape  # type: ignore[return-value]


@mgmt_app.command("phantom")
def phantom_command(
    out: Path = typer.Option(..., "--out", help="Folder to write the UPenn-GBM-layout cohort to."),
    patients: int = typer.Option(..., "--patients", help="Number of pre-operative patients."),
    shape: str = typer.Option("240,240,155", "--shape", help="Volume size x,y,z (SRI-24: "
                              "240,240,155; smaller keeps the same field of view)."),
    signal: float = typer.Option(1.0, "--signal", help="MGMT signal strength (0 = none)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a synthetic MGMT cohort on real MNI152 anatomy, in the exact UPenn-GBM layout."""
    from gliotl.mgmt.data.phantom import make_phantom_cohort, oracle_auc

    truth = make_phantom_cohort(out, patients, _parse_shape(shape), signal=signal, seed=seed,
                                progress=True)
    counts = truth.loc[~truth["followup"], "MGMT"].value_counts().to_dict()
    typer.echo(f"wrote {len(truth)} scans to {out} ({counts}); "
               f"ideal-model AUC at signal {signal}: {oracle_auc(signal):.3f}")


@mgmt_app.command("prepare")
def prepare_command(
    config: Path = typer.Argument(..., help="YAML: cohort source, preprocess, cache_dir, "
                                  "workers (see gliotl.mgmt.data.prepare)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Preprocess a cohort into the volume cache (parallel, resumable) and write its table."""
    from gliotl.core.config import load_config
    from gliotl.mgmt.data.prepare import PrepareConfig, run_prepare

    settings = load_config(PrepareConfig, config).resolved(config.resolve().parent)
    cohort, report, table = run_prepare(settings, progress=progress)
    typer.echo(f"processed {len(report.processed)}, already cached {len(report.skipped)}, "
               f"failed {len(report.failed)}; cohort of {len(cohort.table)} patients -> {table}")
    for reason, count in sorted(cohort.exclusions.items()):
        typer.echo(f"  excluded: {reason}: {count}")
    for message in report.failed.values():
        typer.secho(f"  {message}", fg="yellow")
