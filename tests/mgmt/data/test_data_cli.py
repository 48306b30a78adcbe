"""`gliotl mgmt phantom` and `gliotl mgmt prepare` end to end, with parallel workers, a damaged
file reported as an exclusion (not a crash inside a worker) and a resumed second run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gliotl.cli import app
from gliotl.errors import GliotlError
from gliotl.mgmt.data import read_cohort_table, read_upenn


@pytest.mark.slow
def test_phantom_and_prepare_commands(tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "cohort"
    result = runner.invoke(app, ["mgmt", "phantom", "--out", str(out), "--patients", "5",
                                 "--shape", "40,40,28", "--signal", "1.5", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "ideal-model AUC" in result.output
    cohort = read_upenn(out)
    victim = cohort.patient_ids[0]
    damaged = Path(cohort.row(victim)["T1GD"])
    damaged.write_bytes(damaged.read_bytes()[:200])

    config = tmp_path / "prepare.yaml"
    config.write_text(yaml.safe_dump({
        "cohort": {"kind": "upenn", "root": "cohort"},
        "preprocessing": {"preset": "schmitz2024", "target_shape": [16, 20, 20],
                          "crop_grid": [28, 40, 40], "crop_box": [[0, 25], [6, 35], [7, 35]]},
        "cache_dir": "cache",
        "cache_workers": 2,
        "modalities": ["struct"],
        "on_error": "exclude",
    }))
    result = runner.invoke(app, ["mgmt", "prepare", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "failed 1" in result.output and damaged.name in result.output
    table = read_cohort_table(tmp_path / "cache" / "cohort.csv")
    assert table.patient_ids == cohort.patient_ids[1:]
    assert table.exclusions["preprocessing failed"] == 1

    result = runner.invoke(app, ["mgmt", "prepare", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "processed 0" in result.output

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"cohort": {"kind": "upenn"}, "cache_dir": "c"}))
    result = runner.invoke(app, ["mgmt", "prepare", str(bad)])
    assert isinstance(result.exception, GliotlError) and "root" in str(result.exception)


def test_shipped_prepare_config_shares_the_run_cohort_model():
    """configs/upenn_prepare.yaml validates and resolves its paths like the experiment config."""
    from gliotl.core.config import load_config
    from gliotl.mgmt.config import load_mgmt_config
    from gliotl.mgmt.data.prepare import PrepareConfig

    configs = Path(__file__).resolve().parents[3] / "configs"
    prepare = load_config(PrepareConfig, configs / "upenn_prepare.yaml")
    run, _ = load_mgmt_config(configs / "schmitz2024.yaml")
    assert prepare.cohort == run.cohort
    assert prepare.cache_dir == run.cache_dir == str((configs / "../data/cache/schmitz2024")
                                                      .resolve())
    assert prepare.preprocessing == run.preprocessing
