"""CLI: `gliotl mgmt`."""

from __future__ import annotations

from pathlib import Path

import typer

from gliotl.core import cli_options as opt
from gliotl.core.config import SEED_MAX

mgmt_app = typer.Typer(
    help="MGMT methylation from MRI: cohorts, preprocessing, SpotTune experiments.",
    no_args_is_help=True,
)


def _parse_shape(text: str) -> tuple[int, int, int]:
    from gliotl.errors import GliotlError

    try:
        parts = [int(part) for part in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 16:
        raise GliotlError(f"--shape: three integers >= 16 like 96,96,64 expected, got '{text}'")
    return parts[0], parts[1], parts[2]


@mgmt_app.command("phantom")
def phantom_command(
    out: Path = typer.Option(..., "--out", help="New or empty folder to write the cohort to, "
                           "as TCIA's UPenn-GBM download unpacks."),
    patients: int = typer.Option(..., "--patients", min=1,
                                 help="Number of pre-operative patients."),
    shape: str = typer.Option("240,240,155", "--shape", help="Volume size x,y,z (SRI-24: "
                              "240,240,155; smaller keeps the same field of view)."),
    signal: float = typer.Option(1.0, "--signal", min=0.0,
                                 help="MGMT signal strength (0 = none)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX),
) -> None:
    """Write a synthetic MGMT cohort on real MNI152 anatomy, in the exact UPenn-GBM TCIA tree."""
    from gliotl.mgmt.data.phantom import make_phantom_cohort, oracle_auc

    truth = make_phantom_cohort(out, patients, _parse_shape(shape), signal=signal, seed=seed,
                                progress=True)
    counts = truth.loc[~truth["followup"], "MGMT"].value_counts().to_dict()
    typer.echo(f"wrote {len(truth)} scans to {out} ({counts}); "
               f"ideal-model AUC at signal {signal}: {oracle_auc(signal):.3f}")


@mgmt_app.command("prepare")
def prepare_command(
    config: Path = typer.Argument(..., help="YAML: cohort, preprocessing, cache_dir, "
                                  "cache_workers (e.g. configs/upenn_prepare.yaml)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    set_values: opt.SetValues = None,
) -> None:
    """Preprocess a cohort into the volume cache (parallel, resumable) and write its table."""
    from gliotl.core.config import load_config
    from gliotl.mgmt.data.prepare import PrepareConfig, run_prepare

    settings = load_config(PrepareConfig, config, set_values or ())
    cohort, report, table = run_prepare(settings, progress=progress, echo=typer.echo)
    typer.echo(f"processed {len(report.processed)}, already cached {len(report.skipped)}, "
               f"failed {len(report.failed)}; cohort of {len(cohort.table)} patients -> {table}")
    for reason, count in sorted(cohort.exclusions.items()):
        typer.echo(f"  excluded: {reason}: {count}")
    for message in report.failed.values():
        typer.secho(f"  {message}", fg="yellow")


@mgmt_app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="experiment YAML (e.g. configs/mgmt_phantom.yaml)"),
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
    """Run the MGMT experiment (all methods, modalities, folds) and write its report."""
    from gliotl.core.runs.mlflow_logging import require_mlflow
    from gliotl.mgmt.config import load_mgmt_config
    from gliotl.mgmt.pipeline.experiment import run_mgmt_experiment
    from gliotl.mgmt.pipeline.report import print_summary

    require_mlflow(mlflow)
    jobs_executor = opt.build_executor(executor, workers, ray_address, shared_fs)
    cfg, base_dir = load_mgmt_config(config, set_values or ())
    run = run_mgmt_experiment(
        cfg, base_dir, out=out, resume=resume, overwrite=overwrite,
        executor=jobs_executor, retries=retries, overrides=set_values or (),
    )
    print_summary(run)
    opt.log_to_mlflow(run, mlflow)


@mgmt_app.command("predict")
def predict_command(
    run_dir: Path = typer.Argument(..., help="a finished MGMT run directory"),
    cohort: Path = typer.Argument(..., help="cohort table CSV (patient_id, modality paths, "
                                  "segmentation; label optional)"),
    method: str = typer.Option(None, "--method", help="which method's fold models "
                               "(default: the run's reference)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    out: opt.PredictOut = None,
    force: opt.Force = False,
) -> None:
    """Apply a run's fold models, preprocessing, fusion and thresholds to a new cohort."""
    from gliotl.core.device import resolve_device
    from gliotl.mgmt.pipeline.predict import predict_cohort

    resolve_device(device, "--device")
    opt.check_predict_out(out, force)
    frame = predict_cohort(run_dir, cohort, method=method, device=device)
    for row in frame[frame["not_scored"] != ""].itertuples():
        typer.echo(f"warning: {cohort}: patient '{row.patient_id}' not scored: "
                   f"{row.not_scored}", err=True)
    if out is None:
        typer.echo(frame.to_csv(index=False), nl=False)
    else:
        from gliotl.core.io import write_csv

        write_csv(out, frame)
        typer.echo(f"wrote {len(frame)} predictions to {out}")


@mgmt_app.command("pretrain")
def pretrain_command(
    cohort: Path = typer.Option(..., "--cohort", help="cohort table CSV with images and "
                                "segmentations (MGMT labels are not used)"),
    out: Path = typer.Option(..., "--out", help="weights file to write (MedicalNet format)"),
    depth: int = typer.Option(10, "--depth", min=10, help="ResNet depth: 10, 18, 34, 50, ..."),
    epochs: int = typer.Option(10, "--epochs", min=1),
    batch_size: int = typer.Option(4, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr", help="learning rate (> 0)"),
    shape: str = typer.Option("32,40,40", "--shape", help="network input D,H,W"),
    modalities: str = typer.Option("all", "--modalities", help="comma list or groups"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Pretrain a backbone on tumour segmentation; save it as a MedicalNet checkpoint."""
    from gliotl.errors import GliotlError
    from gliotl.mgmt.data.cohort import read_cohort_table
    from gliotl.mgmt.data.modalities import resolve_modalities
    from gliotl.mgmt.pipeline.pretrain import pretrain_segmentation

    try:
        size = tuple(int(p) for p in shape.split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 8:
        raise GliotlError(f"--shape: three integers >= 8 like 32,40,40 expected, got '{shape}'")
    if not lr > 0:
        raise GliotlError(f"--lr: a learning rate > 0 expected, got {lr}")

    def report(epoch: int, row: dict) -> None:
        typer.echo(f"epoch {epoch + 1}/{epochs}: loss {row['loss']:.4f}, dice {row['dice']:.3f}")

    summary = pretrain_segmentation(
        read_cohort_table(cohort), out, depth=depth, modalities=resolve_modalities(
            modalities.split(",")), shape=size, epochs=epochs, batch_size=batch_size, lr=lr,
        seed=seed, device=device, progress=report,
    )
    typer.echo(f"wrote {out}: ResNet-{depth} pretrained on {summary['volumes']} volumes in "
               f"{summary['seconds']:.0f} s")
