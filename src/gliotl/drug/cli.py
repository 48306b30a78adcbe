"""CLI: ``gliotl drug run``, ``gliotl drug benchmark``, ``gliotl drug report`` and
``gliotl drug predict``."""

from __future__ import annotations

from pathlib import Path

import typer

from gliotl.core import cli_options as opt

drug_app = typer.Typer(
    help="Run N-step transfer-learning experiments for drug response.", no_args_is_help=True
)


@drug_app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="experiment YAML (e.g. configs/gdsc_glioma.yaml)"),
    out: opt.Out = None,
    resume: opt.Resume = False,
    overwrite: opt.Overwrite = False,
    executor: opt.ExecutorName = "local",
    workers: opt.Workers = 1,
    ray_address: opt.RayAddress = None,
    shared_fs: opt.SharedFs = True,
    retries: opt.Retries = 0,
    set_values: opt.SetValues = None,
    mlflow: opt.MlflowUri = None,
) -> None:
    """Run one drug-response experiment and write its run directory and report."""
    from gliotl.core.runs.mlflow_logging import require_mlflow
    from gliotl.drug.config import load_experiment_config
    from gliotl.drug.pipeline.experiment import run_drug_experiment

    require_mlflow(mlflow)
    jobs_executor = opt.build_executor(executor, workers, ray_address, shared_fs)
    cfg, _ = load_experiment_config(config, set_values or ())
    run = run_drug_experiment(
        cfg, out=out, resume=resume, overwrite=overwrite,
        executor=jobs_executor, retries=retries, overrides=set_values or (),
    )
    from gliotl.drug.pipeline.report import print_summary

    print_summary(run)
    opt.log_to_mlflow(run, mlflow)


@drug_app.command("benchmark")
def benchmark_command(
    config: Path = typer.Argument(..., help="experiment YAML with a panel block (e.g. "
                                  "configs/gdsc_glioma_panel.yaml)"),
    out: opt.Out = None,
    resume: opt.Resume = False,
    overwrite: opt.Overwrite = False,
    executor: opt.ExecutorName = "local",
    workers: opt.Workers = 1,
    ray_address: opt.RayAddress = None,
    shared_fs: opt.SharedFs = True,
    retries: opt.Retries = 0,
) -> None:
    """Run the experiment over a panel of drugs (one run per drug) and compare the methods."""
    from gliotl.core.reporting.console import print_frame
    from gliotl.drug.config import load_experiment_config
    from gliotl.drug.pipeline.panel import run_drug_benchmark
    from gliotl.drug.pipeline.panel_report import PANEL_SUMMARY

    jobs_executor = opt.build_executor(executor, workers, ray_address, shared_fs)
    cfg, _ = load_experiment_config(config)
    run = run_drug_benchmark(cfg, out=out, resume=resume, overwrite=overwrite,
                             executor=jobs_executor, retries=retries)
    import pandas as pd

    print_frame(pd.read_csv(run.path / PANEL_SUMMARY), f"{run.path.name}: panel per method")
    typer.echo(f"report: {run.report_path}")


@drug_app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="a finished drug benchmark panel run directory"),
) -> None:
    """Write a finished panel's panel.csv, summary, figure and report again (no training)."""
    from gliotl.core.reporting.console import print_frame
    from gliotl.drug.pipeline.panel_report import rewrite_panel_report

    summary = rewrite_panel_report(run_dir)
    print_frame(summary, f"{run_dir.name}: panel per method")
    typer.echo(f"report: {run_dir / 'report.html'}")


@drug_app.command("predict")
def predict_command(
    run_dir: Path = typer.Argument(..., help="a finished drug run directory"),
    data: Path = typer.Argument(..., help="expression table (samples x genes: CSV/TSV/Parquet, "
                                "first column = sample id) or a dataset YAML spec"),
    method: str = typer.Option(None, "--method", help="which saved model (default: reference)"),
    out: opt.PredictOut = None,
    force: opt.Force = False,
) -> None:
    """Apply a run's final model to new samples."""
    from gliotl.drug.pipeline.predict import predict_from_run

    opt.check_predict_out(out, force)
    frame = predict_from_run(run_dir, data, method=method)
    if out is None:
        typer.echo(frame.to_csv(index=False), nl=False)
    else:
        from gliotl.core.io import write_csv

        write_csv(out, frame)
        typer.echo(f"wrote {len(frame)} predictions to {out}")
