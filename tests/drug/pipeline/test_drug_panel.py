"""The drug benchmark panel (``gliotl drug benchmark``): the drug list comes from the config's
rule alone, a panel killed midway resumes drug by drug and job by job to the same numbers, the
aggregate counts follow the per-drug outcomes, and a bad panel block is one line and exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clirun import run_gliotl
from gliotl.core.io import read_json, write_json
from gliotl.core.runs.rundir import RunDir
from gliotl.drug.config import ExperimentConfig
from gliotl.drug.data.dataset import DrugDataset
from gliotl.drug.data.drevalpy import write_drevalpy
from gliotl.drug.data.synthetic_chain import make_synthetic_chain
from gliotl.drug.pipeline.panel import read_panel_drugs, resolve_panel_drugs, run_drug_benchmark
from gliotl.drug.pipeline.panel_report import (
    best_baseline,
    ineligible_baselines,
    panel_summary,
    spearman_figure,
)
from gliotl.errors import GliotlError


def _write_chain(out: Path, shuffle_values: bool = False) -> Path:
    """The synthetic chain with Bortezomib measured on only 8 of its 18 glioma lines;
    ``shuffle_values``: the same measurements with their values shuffled (outcomes changed,
    what was measured where kept)."""
    expression, response = make_synthetic_chain(n_other=40, n_glioma=18, n_genes=60, seed=0)
    thin = (response["drug"] == "Bortezomib") & (response["tissue"] == "glioma")
    response = response.drop(response.index[thin][8:])
    if shuffle_values:
        response["value"] = response["value"].sample(frac=1.0, random_state=1).to_numpy()
    samples = response.drop_duplicates("cell_line_name").set_index("cell_line_name")[["tissue"]]
    dataset = DrugDataset(
        name="chain", expression=expression, samples=samples,
        response=response.rename(columns={"cell_line_name": "sample_id"}).drop(columns="tissue"))
    return write_drevalpy(dataset, out)


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    return _write_chain(tmp_path_factory.mktemp("panel_data"))


def panel_config(data: Path, **panel) -> dict:
    non_glioma = [{"column": "tissue", "not_equals": "glioma"}]
    return {
        "name": "panel", "seed": 0,
        "datasets": {"syn": {"kind": "drevalpy", "path": str(data)}},
        "steps": {
            "intermediate": {"dataset": "syn", "drug": "Temozolomide", "filters": non_glioma},
            "target": {"dataset": "syn", "drug": "Temozolomide",
                       "filters": [{"column": "tissue", "equals": "glioma"}]}},
        "target_cv": {"n_splits": 3, "n_repeats": 2},
        "methods": [
            {"name": "mean", "kind": "mean"},
            {"name": "elasticnet", "kind": "elasticnet",
             "params": {"n_alphas": 3, "l1_ratios": [0.5]}},
            {"name": "elasticnet_unscaled", "kind": "elasticnet",
             "preprocessing": {"scaler": "none"},
             "params": {"standardise": False, "n_alphas": 3, "l1_ratios": [0.5]}},
        ],
        "reference": "elasticnet", "n_boot": 20,
        "evaluation": {"n_permutations": 2, "n_boot_test": 50,
                       "permutation_methods": ["elasticnet"]},
        "panel": {"min_target_samples": 10, "baselines": ["mean", "elasticnet"], **panel},
    }


def test_drug_list_is_the_rule_not_the_outcomes(chain, tmp_path):
    config = ExperimentConfig.model_validate(panel_config(chain))
    table = resolve_panel_drugs(config)
    # Bortezomib has 8 glioma lines (< 10); the rest by case-folded name, numbered folders
    assert list(table["drug"]) == ["Cyclophosphamide", "Oxaliplatin", "Temozolomide"]
    assert list(table["folder"]) == ["001_Cyclophosphamide", "002_Oxaliplatin",
                                     "003_Temozolomide"]
    assert set(table["target_samples"]) == {18} and set(table["intermediate_samples"]) == {40}
    cut = ExperimentConfig.model_validate(panel_config(chain, first=2, exclude=["oxaliplatin"]))
    assert list(resolve_panel_drugs(cut)["drug"]) == ["Cyclophosphamide", "Temozolomide"]
    low = ExperimentConfig.model_validate(panel_config(chain, min_target_samples=8))
    assert "Bortezomib" in set(resolve_panel_drugs(low)["drug"])
    # other response values on the same measurements: the same list
    shuffled = _write_chain(tmp_path / "shuffled", shuffle_values=True)
    again = resolve_panel_drugs(ExperimentConfig.model_validate(panel_config(shuffled)))
    assert again.equals(table)
    explicit = ExperimentConfig.model_validate(panel_config(chain, drugs=["Bortezomib"]))
    with pytest.raises(GliotlError, match="panel.drugs.*'Bortezomib' has 8 samples"):
        resolve_panel_drugs(explicit)


def _kill_midway(path: Path) -> tuple[Path, Path]:
    """Leave the panel as a kill during drug 2 would: panel and drug 2 still 'running', drug 2
    without its last jobs and outputs, drug 3 never started; returns a kept and a lost job."""
    manifest = read_json(path / "manifest.json")
    write_json(path / "manifest.json", {**manifest, "status": "running", "finished": None})
    for name in ("panel.csv", "panel_summary.csv", "panel_spearman.png", "report.html"):
        (path / name).unlink()
    second = path / "drugs" / "002_Oxaliplatin"
    manifest = read_json(second / "manifest.json")
    write_json(second / "manifest.json", {**manifest, "status": "running", "finished": None})
    for name in ("metrics.json", "predictions.csv", "report.html", "permutation_null.csv"):
        (second / name).unlink()
    lost = second / "jobs" / "perm-elasticnet-p1" / "result.json"
    lost.unlink()
    (second / "jobs" / "target-elasticnet-r1-f2" / "result.json").unlink()
    for entry in sorted((path / "drugs" / "003_Temozolomide").rglob("*"), reverse=True):
        entry.unlink() if entry.is_file() else entry.rmdir()
    (path / "drugs" / "003_Temozolomide").rmdir()
    return second / "jobs" / "target-elasticnet-r0-f0" / "result.json", lost


def test_panel_killed_midway_resumes_to_the_same_numbers(chain, tmp_path):
    config = ExperimentConfig.model_validate(panel_config(chain))
    run = run_drug_benchmark(config, out=tmp_path / "panel", progress=False)
    first = pd.read_csv(run.path / "panel.csv")
    assert read_json(run.manifest_path)["status"] == "finished"
    assert sorted(p.name for p in (run.path / "drugs").iterdir()) == [
        "001_Cyclophosphamide", "002_Oxaliplatin", "003_Temozolomide"]
    done = run.path / "drugs" / "001_Cyclophosphamide" / "metrics.json"
    stamps = {done: done.stat().st_mtime_ns}
    kept, lost = _kill_midway(run.path)
    stamps[kept] = kept.stat().st_mtime_ns
    with pytest.raises(GliotlError, match="pass --resume"):
        run_drug_benchmark(config, out=run.path, progress=False)
    again = run_drug_benchmark(config, out=run.path, resume=True, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished work not redone
    assert lost.is_file() and (run.path / "drugs" / "003_Temozolomide" / "metrics.json").is_file()
    pd.testing.assert_frame_equal(pd.read_csv(again.path / "panel.csv"), first)
    assert read_panel_drugs(again.path)["drug"].tolist() == first["drug"].unique().tolist()


def test_aggregate_counts_follow_the_per_drug_outcomes():
    table = pd.DataFrame({
        "drug": ["a", "a", "a", "b", "b", "b", "c", "c", "c"],
        "method": ["net", "enet", "mean"] * 3,
        "spearman": [0.5, 0.2, float("nan"), -0.1, 0.3, float("nan"), 0.4, 0.1, float("nan")],
        "permutation_p": [float("nan"), 0.05, float("nan"), float("nan"), 0.1, float("nan"),
                          float("nan"), 0.5, float("nan")],
        "outcome": ["win", "best baseline", "n/a: constant per fold",
                    "loss", "best baseline", "n/a: constant per fold",
                    "no difference", "best baseline", "n/a: constant per fold"],
    })
    summary = panel_summary(table, 0.05).set_index("method")
    assert summary.loc["net", "wins_vs_best_baseline"] == 1
    assert summary.loc["net", "losses_vs_best_baseline"] == 1
    assert summary.loc["enet", "best_baseline_on"] == 3
    assert summary.loc["enet", "permutation_computed"] == 3
    assert summary.loc["enet", "permutation_p_at_most_0.05"] == 1
    assert summary.loc["net", "spearman_median"] == pytest.approx(0.4)
    assert summary.loc["mean", "drugs_with_spearman"] == 0
    rho = pd.DataFrame({"method": ["mean", "enet", "enet2"], "mean": [float("nan"), 0.1, 0.3]})
    assert best_baseline(rho, ["mean", "enet", "enet2"]) == "enet2"
    assert best_baseline(rho, ["mean"]) is None


@pytest.fixture(scope="module")
def one_drug_run(chain, tmp_path_factory) -> Path:
    config = ExperimentConfig.model_validate(panel_config(chain, drugs=["Temozolomide"]))
    return run_drug_benchmark(config, out=tmp_path_factory.mktemp("one") / "run",
                              progress=False).path


def test_panel_outcomes_match_the_corrected_t_rows(one_drug_run):
    """Each drug's outcome is the corrected-t comparison with that drug's best baseline."""
    run = RunDir(one_drug_run)
    table = pd.read_csv(run.path / "panel.csv", keep_default_na=False, na_values=[""])
    rows = table.set_index("method")
    best = rows.loc["elasticnet", "best_baseline"]
    assert best == "elasticnet"  # mean is constant per fold: the only baseline with a rho
    assert rows.loc["elasticnet", "ineligible_baselines"].startswith("mean: Spearman in 0 of 6")
    assert rows.loc["elasticnet", "outcome"] == "best baseline"
    assert rows.loc["mean", "outcome"].startswith("n/a")
    other = rows.loc["elasticnet_unscaled"]
    assert 0 <= other["corrected_t_p_vs_best_baseline"] <= 1
    expected = ("no difference" if other["corrected_t_p_vs_best_baseline"] >= 0.05 else
                "win" if other["fold_spearman_difference_vs_best_baseline"] > 0 else "loss")
    assert other["outcome"] == expected
    assert rows.loc["elasticnet_unscaled", "permutation_note"].startswith("not computed")
    assert 0 < rows.loc["elasticnet", "permutation_p"] <= 1
    assert (run.path / "panel_spearman.png").stat().st_size > 0
    assert "Per-drug Spearman" in run.report_path.read_text()


@pytest.mark.parametrize(("change", "field"), [
    ({"baselines": ["ridge"]}, "panel.baselines"),
    ({"steps": ["intermediate"]}, "panel.steps"),
    ({"first": 0}, "panel.first"),
    (None, "panel"),
])
def test_bad_panel_config_is_one_line_and_exit_2(chain, tmp_path, capsys, change, field):
    config = panel_config(chain)
    if change is None:
        del config["panel"]
    else:
        config["panel"].update(change)
    path = tmp_path / "panel.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = run_gliotl(["drug", "benchmark", path, "--out", tmp_path / "run"], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and field in err
    assert not (tmp_path / "run").exists()


def test_a_baseline_constant_in_most_folds_is_not_the_best_baseline():
    """A tuned ElasticNet that ranks in 3 of 9 folds has a mean Spearman from those 3 only: it
    cannot be the bar the other methods are held to."""
    nan = float("nan")
    per_fold = pd.DataFrame({
        "method": ["enet"] * 9 + ["enet2"] * 9 + ["mean"] * 9,
        "spearman": [0.6, 0.5, 0.7] + [nan] * 6 + [0.1, 0.2, nan, 0.0, 0.3, 0.1, 0.2, 0.1, nan]
                    + [nan] * 9,
    })
    rho = pd.DataFrame({"method": ["mean", "enet", "enet2"], "mean": [nan, 0.6, 0.15]})
    baselines = ["mean", "enet", "enet2"]

    def eligible(folds: pd.DataFrame) -> list[str]:
        left_out = ineligible_baselines(folds, baselines)
        return [b for b in baselines if b not in left_out]

    assert best_baseline(rho, baselines) == "enet"  # by the mean alone
    assert best_baseline(rho, eligible(per_fold)) == "enet2"
    left_out = ineligible_baselines(per_fold, baselines)
    assert left_out == {"mean": "Spearman in 0 of 9 folds (constant in the rest)",
                        "enet": "Spearman in 3 of 9 folds (constant in the rest)"}
    half = per_fold[per_fold["method"] != "enet"].copy()
    half.loc[half["method"] == "enet2", "spearman"] = [0.1] * 4 + [nan] * 5  # 4 of 9: not most
    assert best_baseline(rho, eligible(half)) is None


def test_figure_legend_names_only_methods_with_points():
    table = pd.DataFrame({"drug": ["a", "a", "b", "b"], "method": ["net", "mean"] * 2,
                          "spearman": [0.3, float("nan"), 0.1, float("nan")]})
    fig = spearman_figure(table)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["net"]
    assert ax.get_title(loc="left").endswith("(constant per fold): mean")


def test_drug_run_refuses_a_panel_config(chain, tmp_path, capsys):
    path = tmp_path / "panel.yaml"
    path.write_text(yaml.safe_dump(panel_config(chain)))
    code, _, err = run_gliotl(["drug", "run", path, "--out", tmp_path / "run"], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1
    assert "field 'panel'" in err and "gliotl drug benchmark" in err
    assert not (tmp_path / "run").exists()


def test_drug_report_rewrites_a_finished_panel_from_its_drug_runs(one_drug_run, capsys):
    before = pd.read_csv(one_drug_run / "panel.csv")
    stamps = {p: p.stat().st_mtime_ns for p in (one_drug_run / "drugs").rglob("*") if p.is_file()}
    for name in ("panel.csv", "panel_summary.csv", "panel_spearman.png"):
        (one_drug_run / name).unlink()
    code, out, err = run_gliotl(["drug", "report", one_drug_run], capsys)
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(one_drug_run / "panel.csv"), before)
    assert (one_drug_run / "panel_spearman.png").stat().st_size > 0
    assert "panel per method" in out
    # the drug runs are read, never rewritten
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_drug_report_refuses_what_is_not_a_finished_panel(one_drug_run, tmp_path, capsys):
    code, _, err = run_gliotl(["drug", "report", tmp_path], capsys)
    assert code == 2 and "not a drug benchmark panel run" in err
    assert len(err.strip().splitlines()) == 1
    copy = tmp_path / "copy"
    shutil.copytree(one_drug_run, copy)
    drug = copy / "drugs" / "001_Temozolomide" / "manifest.json"
    write_json(drug, {**read_json(drug), "status": "running"})
    code, _, err = run_gliotl(["drug", "report", copy], capsys)
    assert code == 2 and "drug run not finished" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1
