"""Bad inputs through every command, table-driven: each case builds its inputs in ``tmp_path``,
runs the ``gliotl`` command line in this process (``gliotl.cli.main``, exactly what
``python -m gliotl`` runs) and asserts exit status 2, exactly one non-empty line on stderr that
names the file or field at fault, and that no file that existed before changed (sha256 before
and after; a case lists what it may legitimately create or update, e.g. the manifest of a run
that failed). The fault tests after the table inject disk-full and read-only-file-system errors
and hold a run's lock from another process.
"""

from __future__ import annotations

import copy
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from clirun import run_gliotl
from gliotl.cli import main
from gliotl.core.runs.rundir import LOCK_FILE

ROOT = Path(__file__).resolve().parents[2]

DRUG = {
    "name": "tiny",
    "seed": 0,
    "datasets": {"syn": {"kind": "drevalpy", "path": "data/synthetic_chain"}},
    "steps": {"target": {"dataset": "syn", "drug": "Temozolomide"}},
    "target_cv": {"n_splits": 2, "n_repeats": 1},
    "network": {"hidden": [8], "activations": ["relu"], "dropout": [0.0]},
    "train": {"pretrain": {"epochs": 2}, "finetune": {"epochs": 2}},
    "methods": [{"name": "target_only", "kind": "network"}, {"name": "mean", "kind": "mean"}],
    "reference": "target_only",
    "n_boot": 10,
}
"""A drug experiment that finishes in about two seconds (42 lines x 40 genes, 2 folds)."""

MGMT = {
    "name": "tiny_mgmt",
    "seed": 0,
    "cohort": {"kind": "phantom", "n_patients": 8, "shape": [32, 32, 24], "signal": 1.0,
               "seed": 1},
    "preprocessing": {"target_shape": [16, 16, 16]},
    "modalities": ["T1GD"],
    "model": {"depth": 10},
    "methods": ["full"],
    "reference": "full",
    "training": {"epochs": 1, "device": "cpu"},
    "split": {"n_splits": 2},
    "n_boot": 0,
}
"""An MGMT config that is valid; every MGMT case fails before a phantom is generated."""


# -- the harness -------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_unchanged(before: dict[str, str], after: dict[str, str],
                     may_change: tuple[str, ...] = (), may_create: tuple[str, ...] = ()) -> None:
    """Every file that was there is there with the same bytes (except ``may_change``); new
    files only under ``may_create`` prefixes."""
    for name, digest in before.items():
        if name in may_change:
            continue
        assert after.get(name) == digest, f"pre-existing file changed or removed: {name}"
    new = [name for name in after if name not in before]
    unexpected = [n for n in new if not any(n.startswith(prefix) for prefix in may_create)]
    assert not unexpected, f"unexpected new files: {unexpected[:5]}"


def run_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit status and the non-empty stderr lines of ``gliotl argv``, run in this process."""
    code, _, err = run_gliotl(argv, capsys)
    return code, [line for line in err.splitlines() if line.strip()]


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass(frozen=True)
class Case:
    """One bad input: ``build(tmp)`` writes it and returns the command line."""

    id: str
    build: Callable[[Path], list[str]]
    names: str  # what the error line must name (file, field or option)
    forbid: tuple[str, ...] = ()  # what the line must not say (wrong advice)
    may_change: tuple[str, ...] = ()
    may_create: tuple[str, ...] = ()
    after: Callable[[Path], None] | None = None  # further checks on the files left
    extra: dict = field(default_factory=dict)


# -- inputs the cases start from ------------------------------------------------------------


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """Synthetic drug data and one finished tiny drug run, copied into every case's folder."""
    from gliotl.drug.data.synthetic_chain import write_synthetic_chain

    root = tmp_path_factory.mktemp("assets")
    write_synthetic_chain(root / "data", seed=0, n_other=30, n_glioma=12, n_genes=40)
    write_yaml(root / "tiny.yaml", DRUG)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        main(["drug", "run", "tiny.yaml", "--out", "run"])  # a failure exits (SystemExit)
    finally:
        os.chdir(cwd)
    assert json.loads((root / "run" / "manifest.json").read_text())["status"] == "finished"
    ASSETS[:] = [root]
    return root


def drug_config(tmp: Path, *changes: Callable[[dict], None] | None,
                base: dict | None = None) -> Path:
    """``c.yaml`` in ``tmp``: ``base`` (default the tiny experiment) with ``changes`` made."""
    config = copy.deepcopy(base or DRUG)
    for change in changes:
        if change is not None:
            change(config)
    return write_yaml(tmp / "c.yaml", config)


ASSETS: list[Path] = []


def _drug_data(tmp: Path) -> Path:
    """The tiny drug data set, copied into ``tmp``."""
    if not (tmp / "data").exists():
        shutil.copytree(ASSETS[0] / "data", tmp / "data")
    return tmp / "data" / "synthetic_chain"


def mgmt_config(tmp: Path, change: Callable[[dict], None] | None = None) -> Path:
    config = copy.deepcopy(MGMT)
    if change is not None:
        change(config)
    return write_yaml(tmp / "m.yaml", config)


def setter(dotted: str, value: Any) -> Callable[[dict], None]:
    """A change that sets ``a.b.0.c`` (list indices as numbers) to ``value``."""

    def change(config: dict) -> None:
        *parents, last = dotted.split(".")
        node: Any = config
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def remover(key: str) -> Callable[[dict], None]:
    return lambda config: config.pop(key)


def drug_run_case(case_id: str, change: Callable[[dict], None], names: str,
                  *options: str) -> Case:
    return Case(case_id, lambda t: ["drug", "run", drug_config(t, change), "--out", t / "new",
                                    *options], names)


def text_case(case_id: str, text: str | bytes, names: str, command: str = "drug") -> Case:
    """A config file with exactly these contents, given to ``command``'s config reader."""

    def build(tmp: Path) -> list[str]:
        path = tmp / "c.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        if command == "drug":
            return ["drug", "run", path, "--out", tmp / "new"]
        if command == "mgmt":
            return ["mgmt", "run", path, "--out", tmp / "new"]
        if command == "prepare":
            return ["mgmt", "prepare", path]
        return ["data", "summary", path]

    return Case(f"{command}-{case_id}", build, names)


# -- the cases ---------------------------------------------------------------------------------

UNSAFE_NAMES = {
    "parent-escape": "../../../escaped",
    "slash": "a/b",
    "backslash": "a\\b",
    "dotdot": "..",
    "inner-dotdot": "a..b",
    "hidden": ".hidden",
    "space": "my run",
    "leading-dash": "-x",
    "empty": "",
    "too-long": "x" * 65,
    "non-ascii": "caf\u00e9",
    "colon": "a:b",
    "nul": "a\x00b",
}


def _name_cases() -> list[Case]:
    cases = []
    for label, bad in UNSAFE_NAMES.items():
        cases.append(drug_run_case(f"drug-name-{label}", setter("name", bad), "name"))
        cases.append(drug_run_case(f"drug-method-name-{label}", setter("methods.1.name", bad),
                                   "methods.1"))
        cases.append(drug_run_case(
            f"drug-step-name-{label}",
            lambda c, bad=bad: c.update(steps={bad: c["steps"]["target"]}, target=bad), "steps"))
        cases.append(Case(f"mgmt-name-{label}", lambda t, bad=bad: [
            "mgmt", "run", mgmt_config(t, setter("name", bad)), "--out", t / "new"], "name"))
    for label, bad in {"slash": "../x", "hidden": ".x", "backslash": "a\\b"}.items():
        cases.append(drug_run_case(f"drug-step-drug-{label}",
                                   setter("steps.target.drug", bad), "steps.target.drug"))
        cases.append(drug_run_case(
            f"drug-candidate-{label}",
            lambda c, bad=bad: c.update(source_selection={"candidates": [bad]}),
            "source_selection.candidates"))
    return cases


BOMB = "".join(
    f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}" if i else '"x"'] * 9)
    + "]\n" for i in range(9)) + "name: tiny\n"


def _yaml_cases() -> list[Case]:
    base = yaml.safe_dump(DRUG, sort_keys=False)
    cases = []
    for command in ("drug", "mgmt", "prepare", "summary"):
        cases += [
            text_case("duplicate-top-key", "name: a\nseed: 1\nseed: 2\n", "'seed' given twice",
                      command),
            text_case("duplicate-nested-key", "a:\n  b: 1\n  c: 2\n  b: 3\n",
                      "'b' given twice", command),
            text_case("duplicate-flow-key", "a: {x: 1, x: 2}\n", "'x' given twice", command),
            text_case("alias-bomb", BOMB, "expand to more than", command),
            text_case("recursive-alias", "a: &a [1, *a]\n", "recursive alias", command),
            text_case("latin-1", "name: caf\u00e9\n".encode("latin-1"), "not UTF-8", command),
            text_case("utf-16", "name: x\n".encode("utf-16"), "not UTF-8", command),
            text_case("unclosed-bracket", "name: [x\n", "invalid YAML at line", command),
            text_case("tab-indent", "a:\n\tb: 1\n", "invalid YAML", command),
            text_case("empty", "", "empty", command),
            text_case("top-level-list", "- a\n- b\n", "mapping", command),
        ]
    cases += [
        text_case("duplicate-method-key", base.replace("kind: mean", "kind: mean\n  kind: mean"),
                  "'kind' given twice"),
        text_case("unknown-top-key-appended", base + "epochs: 3\n", "epochs"),
        text_case("undefined-alias", base + "x: *nothing\n", "invalid YAML"),
    ]
    return cases


def _drug_field_cases() -> list[Case]:
    bad_fields = [
        ("seed-negative", "seed", -1, "seed"),
        ("seed-huge", "seed", 2**40, "seed"),
        ("seed-text", "seed", "abc", "seed"),
        ("seed-float", "seed", 1.5, "seed"),
        ("n-splits-1", "target_cv.n_splits", 1, "target_cv.n_splits"),
        ("n-repeats-0", "target_cv.n_repeats", 0, "target_cv.n_repeats"),
        ("target-cv-unknown-key", "target_cv.folds", 3, "target_cv.folds"),
        ("methods-empty", "methods", [], "methods"),
        ("method-unknown-kind", "methods.1.kind", "magic", "methods.1.kind"),
        ("method-duplicate-names", "methods.1.name", "target_only", "method names"),
        ("reference-unknown", "reference", "nope", "reference"),
        ("target-undefined", "target", "nope", "target"),
        ("step-unknown-dataset", "steps.target.dataset", "nope", "unknown dataset"),
        ("step-unknown-scaler", "steps.target.scaler", "zscore", "steps.target.scaler"),
        ("step-unknown-response", "steps.target.response", "rank", "steps.target.response"),
        ("step-unknown-key", "steps.target.drugs", "x", "steps.target.drugs"),
        ("dataset-unknown-kind", "datasets.syn.kind", "excel", "datasets.syn"),
        ("genes-policy", "genes", {"policy": "union"}, "genes.policy"),
        ("network-hidden-text", "network.hidden", "big", "network.hidden"),
        ("network-activations-length", "network.activations", ["relu", "relu"], "network"),
        ("train-unknown-key", "train.finetune.epoch", 3, "train.finetune.epoch"),
        ("train-unknown-preset", "train.warmup", {}, "train.warmup"),
        ("method-unknown-param", "methods.1.params", {"alpha": 1}, "methods.1"),
        ("chain-unknown-step", "methods.0.chain", ["nope"], "chain step"),
        ("chain-target-step", "methods.0.chain", ["target"], "chain step"),
        ("n-boot-text", "n_boot", "many", "n_boot"),
        ("n-boot-zero", "n_boot", 0, "n_boot"),
        ("n-boot-negative", "n_boot", -5, "n_boot"),
        ("train-seed-negative", "train.finetune.seed", -1, "train.finetune.seed"),
        ("unknown-top-key", "epochs", 3, "epochs"),
        ("filters-not-list", "steps.target.filters", "glioma", "steps.target.filters"),
        ("filter-unknown-key", "steps.target.filters", [{"column": "tissue", "eq": "x"}],
         "steps.target.filters.0.eq"),
        ("source-cv-without-chain", "source_cv", {"n_splits": 2}, "source_cv"),
        ("source-selection-bad-step", "source_selection",
         {"candidates": ["Oxaliplatin"], "step": "nope"}, "source_selection"),
    ]
    cases = [drug_run_case(f"drug-{label}", setter(key, value), names)
             for label, key, value, names in bad_fields]
    for key in ("name", "datasets", "steps", "methods"):
        cases.append(drug_run_case(f"drug-missing-{key}", remover(key), key))
    cases += [
        Case("drug-config-not-found", lambda t: ["drug", "run", t / "nope.yaml"], "nope.yaml"),
        Case("drug-config-is-folder", lambda t: ["drug", "run", t], "is a folder"),
        Case("drug-splits-file-missing", lambda t: ["drug", "run", drug_config(t, setter(
            "datasets.syn.path", str(_drug_data(t))), setter(
            "target_cv.splits_file", "missing_splits.csv")), "--out", t / "new"],
            "missing_splits.csv", may_create=("new/",), after=lambda t: _assert_status(
                t / "new", "failed")),
        Case("drug-data-path-typo", lambda t: ["drug", "run", drug_config(t, setter(
            "datasets.syn.path", "data/synthetic_chian")), "--out", t / "new"],
            "synthetic_chian", may_create=("new/",), after=lambda t: _assert_status(
                t / "new", "failed")),
    ]
    return cases


def _spoilt_data_case(case_id: str, file: str, change: Callable[[Any], None],
                      names: str) -> Case:
    """``drug run`` on a copy of the tiny data with ``change`` made to one of its tables: the
    run it opened is marked failed, nothing else is written."""
    def build(tmp: Path) -> list[str]:
        import pandas as pd

        data = _drug_data(tmp)
        frame = pd.read_csv(data / file)
        change(frame)
        frame.to_csv(data / file, index=False)
        return ["drug", "run", drug_config(tmp, setter("datasets.syn.path", str(data))),
                "--out", tmp / "new"]

    return Case(case_id, build, names, may_create=("new/",),
                after=lambda t: _assert_status(t / "new", "failed"))


def _constant(frame: Any) -> None:
    frame.loc[frame["pubchem_id"] == "Temozolomide", "AUC"] = 0.5


def _with_source_cv(splits_file: str) -> Callable[[dict], None]:
    """A source step (the other lines, Oxaliplatin) chained before the glioma target, with
    ``source_cv`` reading ``splits_file``."""
    def change(config: dict) -> None:
        config["steps"] = {
            "source": {"dataset": "syn", "drug": "Oxaliplatin",
                       "filters": [{"column": "tissue", "equals": "other"}]},
            "target": {"dataset": "syn", "drug": "Temozolomide",
                       "filters": [{"column": "tissue", "equals": "glioma"}]},
        }
        config["methods"][0]["chain"] = ["source"]
        config["source_cv"] = {"n_splits": 2, "n_repeats": 1, "splits_file": splits_file}
    return change


def _source_cv_split_cases() -> list[Case]:
    """A source_cv split file is read with the data: a bad one given with --overwrite leaves
    the finished run in place (it was once read after the old run was deleted)."""
    def build(tmp: Path, text: str | None) -> list[str]:
        run = _run_folder(tmp, ASSETS[0])
        if text is not None:
            _text(tmp / "source_splits.csv", text)
        return ["drug", "run", drug_config(tmp, _with_source_cv("source_splits.csv")),
                "--out", run, "--overwrite"]

    return [Case(f"drug-source-cv-splits-{label}", lambda t, x=text: build(t, x),
                 "source_splits.csv", after=lambda t: _assert_status(t / "run", "finished"))
            for label, text in [("missing", None), ("bad-columns", "a,b\n1,2\n")]]


def _data_cases() -> list[Case]:
    expression = "gene_expression.csv"
    responses = "synthetic_chain.csv"
    return [
        _spoilt_data_case("drug-data-expression-inf", expression,
                          lambda f: f.__setitem__("GENE0003", f["GENE0003"].astype(float).mask(
                              f.index == 4, float("inf"))), "sample 'LINE-0004'"),
        _spoilt_data_case("drug-data-expression-text", expression,
                          lambda f: f.__setitem__("GENE0003", f["GENE0003"].astype(str).mask(
                              f.index == 4, "high")), "GENE0003"),
        _spoilt_data_case("drug-data-constant-target", responses, _constant, "steps.target"),
        _spoilt_data_case("drug-data-response-text", responses,
                          lambda f: f.__setitem__("AUC", f["AUC"].astype(str).mask(
                              f.index == 3, "resistant")), "AUC"),
    ]


def _assert_status(run: Path, status: str) -> None:
    assert json.loads((run / "manifest.json").read_text())["status"] == status


def _option_cases() -> list[Case]:
    def drug(*options: str, out: bool = True) -> Callable[[Path], list[str]]:
        return lambda t: ["drug", "run", drug_config(t), *(["--out", t / "new"] if out else []),
                          *options]

    def mgmt(*options: str) -> Callable[[Path], list[str]]:
        return lambda t: ["mgmt", "run", mgmt_config(t), "--out", t / "new", *options]

    return [
        Case("drug-retries-negative", drug("--retries", "-1"), "--retries"),
        Case("drug-retries-text", drug("--retries", "many"), "--retries"),
        Case("drug-workers-zero", drug("--workers", "0"), "--workers"),
        Case("drug-workers-negative", drug("--workers", "-2"), "--workers"),
        Case("drug-executor-unknown", drug("--executor", "spark"), "--executor"),
        Case("drug-no-shared-fs-local", drug("--no-shared-fs"), "--no-shared-fs"),
        Case("drug-unknown-option", drug("--fast"), "--fast"),
        Case("drug-missing-config", lambda t: ["drug", "run"], "config"),
        Case("drug-resume-nothing", drug("--resume", out=False), "--resume"),
        Case("mgmt-retries-negative", mgmt("--retries", "-1"), "--retries"),
        Case("mgmt-workers-zero", mgmt("--workers", "0"), "--workers"),
        Case("mgmt-executor-unknown", mgmt("--executor", "dask"), "--executor"),
        Case("unknown-command", lambda t: ["train"], "train"),
        Case("unknown-drug-command", lambda t: ["drug", "fit"], "fit"),
        Case("unknown-mgmt-command", lambda t: ["mgmt", "fit"], "fit"),
        Case("unknown-data-command", lambda t: ["data", "get"], "get"),
        Case("demo-unknown-option", lambda t: ["demo", "--fast"], "--fast"),
    ]


def _mgmt_field_cases() -> list[Case]:
    bad_fields = [
        ("seed-negative", "seed", -5, "seed"),
        ("seed-text", "seed", "x", "seed"),
        ("method-unknown", "methods", ["magic"], "methods"),
        ("methods-empty", "methods", [], "methods"),
        ("reference-unknown", "reference", "spottune", "reference"),
        ("modality-unknown", "modalities", ["T3"], "modalities"),
        ("device-tpu", "training.device", "tpu", "training.device"),
        ("epochs-zero", "training.epochs", 0, "training.epochs"),
        ("batch-size-negative", "training.batch_size", -1, "training.batch_size"),
        ("lr-zero", "training.lr_backbone", 0, "training.lr_backbone"),
        ("n-splits-1", "split.n_splits", 1, "split.n_splits"),
        ("test-size-above-1", "split.test_size", 1.5, "split.test_size"),
        ("n-boot-negative", "n_boot", -1, "n_boot"),
        ("depth-unknown", "model.depth", 11, "model.depth"),
        ("dropout-1", "model.dropout", 1.0, "model.dropout"),
        ("input-mode-unknown", "input_mode", "fused", "input_mode"),
        ("cohort-unknown-kind", "cohort.kind", "nifti", "cohort"),
        ("cache-workers-zero", "cache_workers", 0, "cache_workers"),
        ("cohort-phantom-seed-negative", "cohort.seed", -1, "cohort.phantom.seed"),
        ("cohort-phantom-shape-tiny", "cohort.shape", [4, 32, 24], "cohort.phantom.shape.0"),
        ("model-pretrain-shape-tiny", "model.pretrain",
         {"cohort": {"kind": "phantom"}, "shape": [16, 2, 16]}, "model.pretrain.shape.1"),
        ("model-pretrain-epochs-zero", "model.pretrain",
         {"cohort": {"kind": "phantom"}, "epochs": 0}, "model.pretrain.epochs"),
        ("fusion-missing-policy", "fusion", {"missing": "impute"}, "fusion.missing"),
        ("unknown-top-key", "epochs", 3, "epochs"),
        ("method-training-key", "methods", [{"name": "full", "training": {"epoch": 1}}],
         "epoch"),
    ]
    cases = [Case(f"mgmt-{label}", lambda t, k=key, v=value: [
        "mgmt", "run", mgmt_config(t, setter(k, v)), "--out", t / "new"], names)
        for label, key, value, names in bad_fields]
    # 8 phantom patients leave one methylated patient outside the hold-out: 2 folds cannot
    # both train on it; refused once the splits are drawn, before any training
    cases.append(Case("mgmt-more-folds-than-a-class", lambda t: [
        "mgmt", "run", mgmt_config(t), "--out", t / "new"], "split.n_splits",
        may_create=("new/",), after=lambda t: (_assert_status(t / "new", "failed"), _no_jobs(
            t / "new"))))
    return cases


def _no_jobs(run: Path) -> None:
    """No fold model was trained."""
    assert not list(run.glob("jobs/*/model.pt"))


def _run_folder(tmp: Path, assets: Path, name: str = "run") -> Path:
    """A copy of the finished tiny run (and its data) in ``tmp``."""
    if not (tmp / "data").exists():
        shutil.copytree(assets / "data", tmp / "data")
    shutil.copytree(assets / "run", tmp / name)
    return tmp / name


def _set_manifest(run: Path, **fields: Any) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(fields)
    (run / "manifest.json").write_text(json.dumps(manifest))


def _output_cases() -> list[Case]:
    """``--out`` of ``drug run`` and ``mgmt run``: what is there is never harmed."""

    def out_case(case_id: str, prepare: Callable[[Path], Path], names: str, *options: str,
                 forbid: tuple[str, ...] = (), system: str = "drug", **kw: Any) -> Case:
        def build(tmp: Path) -> list[str]:
            out = prepare(tmp)
            config = drug_config(tmp) if system == "drug" else mgmt_config(tmp)
            return [system, "run", config, "--out", out, *options]

        return Case(case_id, build, names, forbid=forbid, **kw)

    def foreign(tmp: Path) -> Path:
        folder = tmp / "thesis"
        folder.mkdir()
        (folder / "manifest.json").write_text('{"chapters": 5}')
        (folder / "thesis.tex").write_text("\\documentclass{book}")
        return folder

    def with_manifest(text: str) -> Callable[[Path], Path]:
        def prepare(tmp: Path) -> Path:
            folder = tmp / "odd"
            folder.mkdir()
            (folder / "manifest.json").write_text(text)
            return folder
        return prepare

    def user_folder(tmp: Path) -> Path:
        (tmp / "mine").mkdir()
        (tmp / "mine" / "notes.txt").write_text("mine")
        return tmp / "mine"

    def a_file(tmp: Path) -> Path:
        (tmp / "results.txt").write_text("mine")
        return tmp / "results.txt"

    def under_a_file(tmp: Path) -> Path:
        (tmp / "results.txt").write_text("mine")
        return tmp / "results.txt" / "run"

    def legacy(tmp: Path) -> Path:
        return with_manifest('{"gliotl_version": "0.0.1", "status": "finished"}')(tmp)

    never = ("unfinished", "--overwrite")
    cases = []
    for system in ("drug", "mgmt"):
        cases += [
            out_case(f"{system}-foreign-manifest", foreign, "manifest.json", forbid=never,
                     system=system),
            out_case(f"{system}-foreign-manifest-overwrite", foreign, "manifest.json",
                     "--overwrite", forbid=never, system=system),
            out_case(f"{system}-foreign-manifest-resume", foreign, "manifest.json", "--resume",
                     forbid=never, system=system),
            out_case(f"{system}-manifest-list", with_manifest("[1, 2]"), "manifest.json",
                     "--overwrite", forbid=never, system=system),
            out_case(f"{system}-manifest-not-json", with_manifest("{oops"), "manifest.json",
                     "--overwrite", forbid=never, system=system),
            out_case(f"{system}-manifest-without-marker", legacy, "manifest.json",
                     "--overwrite", forbid=never, system=system),
            out_case(f"{system}-folder-of-user-files", user_folder, "mine", "--overwrite",
                     forbid=never, system=system),
            out_case(f"{system}-out-is-a-file", a_file, "results.txt", system=system),
            out_case(f"{system}-out-is-a-file-overwrite", a_file, "results.txt", "--overwrite",
                     system=system),
            out_case(f"{system}-out-under-a-file", under_a_file, "results.txt", system=system),
            out_case(f"{system}-out-name-too-long", lambda t: t / ("r" * 300), "File name too "
                     "long", system=system),
        ]
    return cases


def _run_cases(assets: Path) -> list[Case]:
    """Cases on a copy of a finished run: refusing, replacing only after the data are checked,
    resuming only what can be resumed."""

    def on_run(case_id: str, prepare: Callable[[Path], None] | None, names: str,
               *options: str, change: Callable[[dict], None] | None = None,
               **kw: Any) -> Case:
        def build(tmp: Path) -> list[str]:
            run = _run_folder(tmp, assets)
            base = yaml.safe_load((run / "config.yaml").read_text())  # the run's own, resolved
            if prepare is not None:
                prepare(run)
            return ["drug", "run", drug_config(tmp, change, base=base), "--out", run, *options]

        return Case(case_id, build, names, **kw)

    def add(name: str, folder: bool = False) -> Callable[[Path], None]:
        def prepare(run: Path) -> None:
            if folder:
                (run / name).mkdir()
                (run / name / "draft.md").write_text("mine")
            else:
                (run / name).write_text("mine")
        return prepare

    def unfinished(run: Path) -> None:
        _set_manifest(run, status="running")

    def corrupt_job(text: str) -> Callable[[Path], None]:
        def prepare(run: Path) -> None:
            unfinished(run)
            (run / "jobs" / "target-mean-r0-f0" / "result.json").write_text(text)
        return prepare

    def corrupt_job_file(relative: str) -> Callable[[Path], None]:
        def prepare(run: Path) -> None:
            unfinished(run)
            (run / "jobs" / relative).write_text("{garbage")
        return prepare

    def drop_frame(run: Path) -> None:
        unfinished(run)
        (run / "jobs" / "target-mean-r0-f0" / "predictions.csv").unlink()

    def corrupt_config(run: Path) -> None:
        unfinished(run)
        (run / "config.yaml").write_text("[unclosed")

    def manifest_list(run: Path) -> None:
        (run / "manifest.json").write_text("[]")

    typo = setter("datasets.syn.path", "data/synthetic_chian")
    resumed = ("run/manifest.json",)
    return [
        on_run("finished-run-no-flag", None, "--overwrite replaces it"),
        on_run("unfinished-run-no-flag", unfinished, "--resume"),
        on_run("overwrite-with-data-typo", None, "synthetic_chian", "--overwrite",
               change=typo, after=lambda t: _assert_status(t / "run", "finished")),
        on_run("overwrite-with-bad-splits-file",
               lambda run: _text(run.parent / "bad_splits.csv", "a,b\n1,2\n"),
               "bad_splits.csv", "--overwrite",
               change=setter("target_cv.splits_file", "bad_splits.csv")),
        on_run("overwrite-with-missing-splits-file", None, "missing_splits.csv",
               "--overwrite", change=setter("target_cv.splits_file", "missing_splits.csv")),
        on_run("overwrite-with-bad-seed", None, "seed", "--overwrite",
               change=setter("seed", -1)),
        on_run("overwrite-with-unsafe-method", None, "methods.1", "--overwrite",
               change=setter("methods.1.name", "../../../escaped")),
        on_run("overwrite-user-file-in-run", add("thesis.tex"), "thesis.tex", "--overwrite",
               forbid=("unfinished",)),
        on_run("overwrite-user-folder-in-run", add("chapters", folder=True), "chapters",
               "--overwrite", forbid=("unfinished",)),
        on_run("no-flag-user-file-in-run", add("notes.txt"), "notes.txt",
               forbid=("--overwrite", "unfinished")),
        on_run("resume-finished", None, "already finished", "--resume"),
        on_run("resume-changed-config", unfinished, "differs", "--resume",
               change=setter("seed", 7)),
        on_run("resume-corrupt-job-result", corrupt_job("{half"), "result.json", "--resume",
               may_change=resumed),
        on_run("resume-job-result-not-object", corrupt_job("[1]"), "result.json", "--resume",
               may_change=resumed),
        on_run("resume-job-frame-missing", drop_frame, "predictions.csv", "--resume",
               may_change=resumed),
        on_run("resume-corrupt-run-config", corrupt_config, "config.yaml", "--resume"),
        on_run("resume-final-model-damaged", corrupt_job_file("final-target_only/model.pt"),
               "final-target_only/model.pt", "--resume", may_change=resumed),
        on_run("resume-final-preprocess-damaged",
               corrupt_job_file("final-target_only/preprocess.json"),
               "final-target_only/preprocess.json", "--resume", may_change=resumed),
        on_run("resume-manifest-not-object", manifest_list, "manifest.json", "--resume"),
        on_run("overwrite-manifest-not-object", manifest_list, "manifest.json", "--overwrite",
               forbid=("unfinished",)),
        on_run("resume-locked-run", lambda run: (unfinished(run), _hold_lock(run)),
               "another gliotl process", "--resume"),
        on_run("overwrite-locked-run", _hold_lock, "another gliotl process", "--overwrite"),
    ]


_LOCKS: list[int] = []


def _hold_lock(run: Path) -> None:
    """Take the run's lock through a descriptor of our own, as another process would."""
    fd = os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _LOCKS.append(fd)


def _predict_cases(assets: Path) -> list[Case]:
    def expression(tmp: Path, rows: int = 3, text: str | None = None) -> Path:
        import pandas as pd

        path = tmp / "new.csv"
        if text is not None:
            path.write_text(text)
            return path
        frame = pd.read_csv(tmp / "data" / "synthetic_chain" / "gene_expression.csv").head(rows)
        frame.to_csv(path, index=False)
        return path

    def spoilt(tmp: Path, change: Callable[[Any], Any]) -> Path:
        """Three rows of the training expression with ``change`` made to the frame."""
        import pandas as pd

        frame = pd.read_csv(tmp / "data" / "synthetic_chain" / "gene_expression.csv").head(3)
        frame = frame.astype({c: float for c in frame.columns[1:]})
        change(frame)
        frame.to_csv(tmp / "new.csv", index=False)
        return tmp / "new.csv"

    def predict(case_id: str, names: str, *options: Any, prepare=None, data=None,
                system: str = "drug", **kw: Any) -> Case:
        def build(tmp: Path) -> list[str]:
            run = _run_folder(tmp, assets)
            if prepare is not None:
                prepare(tmp, run)
            table = data(tmp) if data is not None else expression(tmp)
            resolved = [o(tmp) if callable(o) else o for o in options]
            return [system, "predict", run, table, *resolved]

        return Case(f"{system}-predict-{case_id}", build, names, **kw)

    def existing(tmp: Path) -> Path:
        (tmp / "mine.csv").write_text("precious\n")
        return tmp / "mine.csv"

    def unfinished(tmp: Path, run: Path) -> None:
        _set_manifest(run, status="running")

    def unmark(tmp: Path, run: Path) -> None:
        (run / "manifest.json").write_text('{"status": "finished"}')

    def damage(relative: str, text: str) -> Callable[[Path, Path], None]:
        def prepare(tmp: Path, run: Path) -> None:
            (run / relative).write_text(text)
        return prepare

    cases = []
    for system in ("drug", "mgmt"):
        cases += [
            predict("out-exists", "--force", "--out", existing, system=system),
            predict("out-run-predictions", "inside the gliotl run", "--out",
                    lambda t: t / "run" / "predictions.csv", system=system),
            predict("out-run-config-forced", "inside the gliotl run", "--out",
                    lambda t: t / "run" / "config.yaml", "--force", system=system),
            predict("out-run-checkpoints", "inside the gliotl run", "--out",
                    lambda t: t / "run" / "checkpoints" / "p.csv", system=system),
            predict("out-unfinished-run", "inside the gliotl run", "--out",
                    lambda t: t / "run" / "jobs" / "p.csv", prepare=unfinished, system=system),
            predict("out-is-folder", "folder", "--out", lambda t: t, system=system),
            predict("run-unfinished", "not finished", prepare=unfinished, system=system),
            predict("run-not-a-run", "not a gliotl run", system=system,
                    prepare=lambda t, run: (run / "manifest.json").unlink()),
            predict("run-manifest-damaged", "manifest.json", system=system,
                    prepare=damage("manifest.json", "{oops")),
            predict("run-manifest-list", "manifest.json", system=system,
                    prepare=damage("manifest.json", "[]")),
            predict("run-config-damaged", "config.yaml: missing or not a readable", system=system,
                    prepare=damage("config.yaml", "[oops")),
        ]
    cases += [
        predict("out-exists-run-unreadable", "--force", "--out", existing, prepare=unmark),
        predict("method-unknown", "method", "--method", "nope"),
        predict("method-escape", "method", "--method", "../../../escaped"),
        predict("data-missing", "nope.csv", data=lambda t: t / "nope.csv"),
        predict("data-empty", "new.csv", data=lambda t: expression(t, text="")),
        predict("data-text-column", "G0", data=lambda t: expression(
            t, text="sample,G0,G1\nA,high,1\nB,low,2\n")),
        predict("data-too-few-genes", "genes", data=lambda t: expression(
            t, text="sample,NOTAGENE\nA,1\nB,2\n")),
        predict("data-inf", "sample 'LINE-0001'", data=lambda t: spoilt(
            t, lambda f: f.iloc.__setitem__((1, 3), float("inf")))),
        predict("data-minus-inf", "GENE0002", data=lambda t: spoilt(
            t, lambda f: f.iloc.__setitem__((2, 3), float("-inf")))),
        predict("data-no-id-column", "expected the sample ID", data=lambda t: spoilt(
            t, lambda f: f.pop("cell_line_name"))),
        predict("data-id-column-is-a-gene", "GENE0000", data=lambda t: spoilt(
            t, lambda f: f.insert(0, "GENE0000", f.pop("cell_line_name"), allow_duplicates=True))),
        predict("data-spec-duplicate-key", "spec.yaml: key 'kind' given twice",
                data=lambda t: _text(t / "spec.yaml", "kind: drevalpy\nkind: table\n")),
        predict("data-spec-unknown-kind", "spec.yaml", data=lambda t: _text(
            t / "spec.yaml", "kind: magic\npath: x\n")),
        predict("preprocess-damaged", "preprocess.json",
                prepare=damage("checkpoints/target_only/preprocess.json", "{}")),
        predict("preprocess-not-json", "preprocess.json",
                prepare=damage("checkpoints/target_only/preprocess.json", "{oops")),
        predict("model-damaged", "model.pt",
                prepare=damage("checkpoints/target_only/model.pt", "not a checkpoint")),
        predict("mgmt-on-drug-run", "not an MGMT experiment", system="mgmt"),
        predict("device-tpu", "--device", "--device", "tpu", system="mgmt"),
        predict("device-cuda-index", "--device", "--device", "cuda:99", system="mgmt"),
        predict("device-empty", "--device", "--device", "", system="mgmt"),
    ]
    return cases


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _other_command_cases() -> list[Case]:
    def spec(text: str | bytes) -> Callable[[Path], list[str]]:
        def build(tmp: Path) -> list[str]:
            path = tmp / "spec.yaml"
            path.write_bytes(text if isinstance(text, bytes) else text.encode())
            return ["data", "summary", path]
        return build

    return [
        Case("data-fetch-unknown-source", lambda t: ["data", "fetch", "ccle"], "source"),
        Case("data-summary-missing-spec", lambda t: ["data", "summary", t / "nope.yaml"],
             "nope.yaml"),
        Case("data-summary-unknown-kind", spec("kind: magic\n"), "kind"),
        Case("data-summary-missing-path", spec("kind: drevalpy\npath: nowhere\n"), "nowhere"),
        Case("data-summary-unknown-key", spec("kind: drevalpy\npath: x\ncolour: red\n"),
             "colour"),
        Case("mgmt-prepare-missing-config", lambda t: ["mgmt", "prepare", t / "nope.yaml"],
             "nope.yaml"),
        Case("mgmt-prepare-unknown-key", lambda t: ["mgmt", "prepare", _text(
            t / "p.yaml", "cohort: {kind: phantom}\ncache_dir: c\ncolour: red\n")], "colour"),
        Case("mgmt-phantom-bad-shape", lambda t: ["mgmt", "phantom", "--out", t / "p",
                                                  "--patients", "2", "--shape", "8,8"],
             "--shape"),
        Case("mgmt-phantom-patients-text", lambda t: ["mgmt", "phantom", "--out", t / "p",
                                                      "--patients", "many"], "--patients"),
        Case("mgmt-pretrain-bad-shape", lambda t: ["mgmt", "pretrain", "--cohort", t / "c.csv",
                                                   "--out", t / "w.pth", "--shape", "1"],
             "--shape"),
        Case("mgmt-pretrain-epochs-text", lambda t: [
            "mgmt", "pretrain", "--cohort", t / "c.csv", "--out", t / "w.pth", "--epochs",
            "ten"], "--epochs"),
        *[Case(f"mgmt-pretrain-{label}", lambda t, o=option, v=value: [
            "mgmt", "pretrain", "--cohort", t / "c.csv", "--out", t / "w.pth", o, v], option)
          for label, option, value in [
              ("epochs-zero", "--epochs", "0"), ("batch-size-negative", "--batch-size", "-1"),
              ("lr-zero", "--lr", "0"), ("lr-negative", "--lr", "-0.1"),
              ("seed-negative", "--seed", "-1"), ("depth-below-10", "--depth", "1")]],
        *[Case(f"mgmt-phantom-{label}", lambda t, o=option, v=value: [
            "mgmt", "phantom", "--out", t / "p", "--patients", "2", o, v], option)
          for label, option, value in [
              ("patients-zero", "--patients", "0"), ("signal-negative", "--signal", "-1"),
              ("seed-negative", "--seed", "-3")]],
        Case("mgmt-pretrain-missing-cohort", lambda t: [
            "mgmt", "pretrain", "--cohort", t / "c.csv", "--out", t / "w.pth"], "c.csv"),
    ]


def _gdsc_cache(tmp: Path, damage: str) -> list[str]:
    """A complete-looking GDSC PyPI cache in ``tmp/cache`` whose ``damage`` file is spoilt (cut
    short, or its columns dropped), read through ``data summary``."""
    import pandas as pd

    folder = tmp / "cache" / "gdsc_pypi"
    folder.mkdir(parents=True)
    frames = {
        "expression.parquet": pd.DataFrame({"TP53": [1.0, 2.0]}, index=["A", "B"]),
        "response.parquet": pd.DataFrame({"cell_line_name": ["A"], "drug": ["d"],
                                          "measure": ["AUC"], "value": [0.5],
                                          "source": ["GDSC2"]}),
        "cell_lines.parquet": pd.DataFrame({"NAME": ["A"], "COSMIC": [1], "TISSUE": ["t"],
                                            "TISSUE_SUB_TYPE": ["s"]}),
    }
    for name, frame in frames.items():
        frame.to_parquet(folder / name)
    target = folder / damage.split(":")[0]
    if damage.endswith(":columns"):
        pd.DataFrame({"other": [1]}).to_parquet(target)
    else:
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    (folder / "manifest.json").write_text(json.dumps({"format": 1, "files": list(frames)}))
    return ["data", "summary", _text(tmp / "spec.yaml", "kind: gdsc_pypi\ncache_dir: cache\n")]


def _cache_cases() -> list[Case]:
    return [Case(f"gdsc-cache-{label}", lambda t, d=damage: _gdsc_cache(t, d), names)
            for label, damage, names in [
                ("expression-truncated", "expression.parquet", "data fetch gdsc --force"),
                ("response-truncated", "response.parquet", "response.parquet"),
                ("cell-lines-columns", "cell_lines.parquet:columns", "NAME"),
            ]]


def all_cases(assets: Path) -> list[Case]:
    return [*_name_cases(), *_yaml_cases(), *_drug_field_cases(), *_option_cases(),
            *_mgmt_field_cases(), *_data_cases(), *_source_cv_split_cases(), *_output_cases(),
            *_run_cases(assets),
            *_predict_cases(assets), *_other_command_cases(), *_cache_cases()]


CASES = all_cases(Path("<assets>"))  # ids only; the assets path is bound at run time
CASE_IDS = [case.id for case in CASES]


def test_case_ids_are_unique_and_many():
    assert len(set(CASE_IDS)) == len(CASE_IDS)
    assert len(CASE_IDS) >= 150


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case_id, assets, tmp_path,
                                                          monkeypatch, capsys):
    case = next(c for c in all_cases(assets) if c.id == case_id)
    monkeypatch.chdir(tmp_path)
    try:
        argv = case.build(tmp_path)
        before = snapshot(tmp_path)
        start = time.perf_counter()
        code, lines = run_cli(argv, capsys)
        seconds = time.perf_counter() - start
    finally:
        while _LOCKS:
            os.close(_LOCKS.pop())
    assert code == 2, (code, lines)
    assert len(lines) == 1, lines
    line = lines[0]
    assert "Traceback" not in line and line.startswith("error: ")
    assert case.names in line, line
    for wrong in case.forbid:
        assert wrong not in line, line
    assert_unchanged(before, snapshot(tmp_path), case.may_change, case.may_create)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    if case.after is not None:
        case.after(tmp_path)
    assert seconds < 20, f"{case_id} took {seconds:.1f} s"


def test_alias_bomb_fails_fast(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB.replace('"x"', '"' + "x" * 100 + '"'))
    start = time.perf_counter()
    code, lines = run_cli(["drug", "run", path], capsys)
    assert code == 2 and len(lines) == 1 and "bomb.yaml" in lines[0]
    assert time.perf_counter() - start < 0.5


def test_yaml_merge_keys_and_repeated_keys_in_different_mappings_still_load(tmp_path):
    from gliotl.core.config import load_yaml

    path = _text(tmp_path / "ok.yaml", "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n"
                 "a: {x: 1}\nb: {x: 2}\n")
    assert load_yaml(path) == {"base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2},
                               "a": {"x": 1}, "b": {"x": 2}}


# -- faults ------------------------------------------------------------------------------------


def _refuse(err: int) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(err, os.strerror(err), str(args[0]) if args else None)
    return fail


def test_read_only_output_folder_is_one_line_and_changes_nothing(assets, tmp_path,
                                                                 monkeypatch, capsys):
    """A real read-only folder where permissions bind; as root (they do not) the kernel's
    answer for a read-only file system is injected into every folder creation."""
    monkeypatch.chdir(tmp_path)
    config = drug_config(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "kept.txt").write_text("mine")
    before = snapshot(tmp_path)
    if os.geteuid() == 0:
        monkeypatch.setattr(os, "mkdir", _refuse(errno.EROFS))
    else:
        locked.chmod(0o555)
    try:
        code, lines = run_cli(["drug", "run", config, "--out", locked / "run"], capsys)
    finally:
        locked.chmod(0o755)
        monkeypatch.undo()
    assert code == 2 and len(lines) == 1, lines
    assert "locked" in lines[0] and ("Read-only" in lines[0] or "Permission" in lines[0])
    assert_unchanged(before, snapshot(tmp_path))


@pytest.mark.parametrize("when", ["opening", "running"])
def test_disk_full_is_one_line_and_changes_nothing(assets, tmp_path, monkeypatch, capsys, when):
    """ENOSPC injected into every atomic rename: while the run folder is made (nothing is
    left) or once its data are being written (the run exists, no earlier file changed)."""
    import gliotl.core.io as gio

    shutil.copytree(assets / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    config = drug_config(tmp_path)
    before = snapshot(tmp_path)
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if when == "opening" or Path(dst).suffix == ".parquet":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(gio.os, "replace", replace)
    code, lines = run_cli(["drug", "run", config, "--out", tmp_path / "new"], capsys)
    monkeypatch.undo()
    assert code == 2 and len(lines) == 1, lines
    assert "No space left on device" in lines[0]
    after = snapshot(tmp_path)
    if when == "opening":
        assert not (tmp_path / "new").exists()
        assert_unchanged(before, after)
    else:
        assert_unchanged(before, after, may_create=("new/",))
        assert "--resume" in lines[0]
        _assert_status(tmp_path / "new", "failed")
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


def test_second_process_on_a_locked_run_exits_2_with_one_line(assets, tmp_path):
    """Another process holds the run (its lock); ``--resume`` from a fresh interpreter
    refuses at once and leaves every file as it was."""
    run = _run_folder(tmp_path, assets)
    _set_manifest(run, status="running")
    config = drug_config(tmp_path)
    before = snapshot(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
         "os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); "
         "time.sleep(60)", str(run / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = subprocess.run([sys.executable, "-m", "gliotl", "drug", "run", str(config),
                               "--out", str(run), "--resume"], capture_output=True, text=True,
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                              timeout=120)
    finally:
        holder.kill()
        holder.wait()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "another gliotl process" in lines[0] and "Traceback" not in proc.stderr
    assert_unchanged(before, snapshot(tmp_path))


# -- what the refusals protect -----------------------------------------------------------------


def test_overwrite_replaces_a_finished_run_once_the_new_data_are_checked(assets, tmp_path,
                                                                        monkeypatch, capsys):
    run = _run_folder(tmp_path, assets)
    (run / "jobs" / "target-mean-r0-f0" / "stale.txt").write_text("from the old run")
    monkeypatch.chdir(tmp_path)
    config = drug_config(tmp_path, setter("seed", 3))
    code, lines = run_cli(["drug", "run", config, "--out", run, "--overwrite"], capsys)
    assert code == 0, lines
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["seed"] == 3
    assert not (run / "jobs" / "target-mean-r0-f0" / "stale.txt").exists()
    assert not list(tmp_path.glob(".run.replaced-*"))


def test_resume_sweeps_stray_temporary_files(assets, tmp_path, monkeypatch, capsys):
    run = _run_folder(tmp_path, assets)
    _set_manifest(run, status="running")
    stray = [run / ".metrics.json.abc123.tmp", run / "jobs" / "target-mean-r0-f0" /
             ".result.json.x1.tmp"]
    for path in stray:
        path.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    code, lines = run_cli(["drug", "run", run / "config.yaml", "--out", run, "--resume"],
                          capsys)
    assert code == 0, lines
    assert not any(path.exists() for path in stray)
    assert json.loads((run / "manifest.json").read_text())["status"] == "finished"


def test_outputs_follow_the_umask_and_checkpoints_are_byte_reproducible(tmp_path):
    import torch

    from gliotl.core.io import save_torch, write_json

    old = os.umask(0o027)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        model = torch.nn.Linear(4, 2)
        save_torch(tmp_path / "one.pt", model.state_dict())
        save_torch(tmp_path / "two.pt", model.state_dict())
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "one.pt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()


def test_predict_out_with_force_replaces_a_file_outside_runs(assets, tmp_path, monkeypatch,
                                                             capsys):
    import pandas as pd

    run = _run_folder(tmp_path, assets)
    new = tmp_path / "new.csv"
    pd.read_csv(tmp_path / "data" / "synthetic_chain" / "gene_expression.csv").head(3).to_csv(
        new, index=False)
    out = tmp_path / "mine.csv"
    out.write_text("old\n")
    monkeypatch.chdir(tmp_path)
    code, lines = run_cli(["drug", "predict", run, new, "--out", out, "--force"], capsys)
    assert code == 0, lines
    assert len(pd.read_csv(out)) == 3


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_killed_pool_run_resumes_to_the_same_bytes(assets, tmp_path, monkeypatch, capsys):
    """kill -9 of ``drug run --workers 2`` while its pool works; ``--resume`` gives
    byte-identical predictions to an uninterrupted run. (That the workers end with their
    parent: tests/core/runs/test_executors.py::test_pool_workers_end_with_a_killed_parent.)"""
    config = yaml.safe_load((assets / "run" / "config.yaml").read_text())
    config["train"]["finetune"]["epochs"] = 40  # jobs long enough to be killed in flight
    path = write_yaml(tmp_path / "c.yaml", config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gliotl", "drug", "run", str(path), "--out",
         str(tmp_path / "killed"), "--workers", "2"], cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    deadline = time.monotonic() + 90
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        workers = [p for p in _children(proc.pid) if "spawn" in Path(
            f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
        if len(workers) >= 2 and list((tmp_path / "killed" / "jobs").glob("*/timing.json")):
            break
        time.sleep(0.2)
    assert proc.poll() is None and workers, "the run ended before its pool could be killed"
    proc.kill()
    proc.wait()
    monkeypatch.chdir(tmp_path)
    for argv in (["drug", "run", path, "--out", tmp_path / "killed", "--resume"],
                 ["drug", "run", path, "--out", tmp_path / "whole"]):
        code, lines = run_cli(argv, capsys)
        assert code == 0, lines
    resumed = (tmp_path / "killed" / "predictions.csv").read_bytes()
    assert resumed == (tmp_path / "whole" / "predictions.csv").read_bytes()


def test_drug_predict_reads_as_drug_run_and_counts_what_it_imputed_or_averaged(assets, tmp_path,
                                                                               capsys):
    import pandas as pd

    frame = pd.read_csv(assets / "data" / "synthetic_chain" / "gene_expression.csv").head(3)
    frame = frame.astype({c: float for c in frame.columns[1:]})
    clean_path, spoilt_path = tmp_path / "clean.csv", tmp_path / "spoilt.csv"
    frame.to_csv(clean_path, index=False)
    spoilt = frame.copy()
    spoilt.iloc[1, 3] = float("nan")
    spoilt = pd.concat([spoilt, spoilt.iloc[[2]]])  # LINE-0002 twice: averaged to itself
    spoilt.to_csv(spoilt_path, index=False)
    code, out, _ = run_gliotl(["drug", "predict", assets / "run", clean_path], capsys)
    assert code == 0
    clean = pd.read_csv(io.StringIO(out))
    code, out, _ = run_gliotl(["drug", "predict", assets / "run", spoilt_path], capsys)
    assert code == 0
    result = pd.read_csv(io.StringIO(out))
    assert list(result["sample_id"]) == list(clean["sample_id"])  # one row per sample
    assert list(result["values_imputed"]) == [0, 1, 0]
    assert result["note"].str.contains("LINE-0002").all()
    assert result["prediction"].iloc[2] == pytest.approx(clean["prediction"].iloc[2])


def test_policy_changes_are_listed_in_the_run_and_its_report(assets, tmp_path):
    import pandas as pd

    from gliotl.drug.config import load_experiment_config
    from gliotl.drug.pipeline.steps import prepare_steps

    data = _drug_data(tmp_path)
    responses = pd.read_csv(data / "synthetic_chain.csv")
    temozolomide = responses.index[responses["pubchem_id"] == "Temozolomide"]
    responses.loc[temozolomide[0], "AUC"] = float("inf")
    responses = pd.concat([responses, responses.loc[[temozolomide[1]]].assign(AUC=0.9)])
    responses.to_csv(data / "synthetic_chain.csv", index=False)
    expression = pd.read_csv(data / "gene_expression.csv")
    expression.loc[4, "GENE0003"] = float("nan")
    expression.to_csv(data / "gene_expression.csv", index=False)
    config, _ = load_experiment_config(drug_config(tmp_path, setter("datasets.syn.path",
                                                                   str(data))))
    prepare_steps(config, tmp_path / "prepared")
    changes = json.loads((tmp_path / "prepared" / "summary.json").read_text())["changes"]
    by_what = {c["what"]: c for c in changes}
    assert by_what["repeated response measurements"]["samples"] == ["line0001"]
    assert by_what["non-finite (inf) response"]["samples"] == ["line0000"]
    assert by_what["1 missing expression values"]["fields"] == ["GENE0003"]
    assert all(c["file"] == str(data) for c in changes)
    finished = json.loads((assets / "run" / "data_changes.json").read_text())
    assert finished == {"changes": []}
    assert "data_changes.json" in (assets / "run" / "report.html").read_text()


def test_failed_job_advice_fits_the_cause(tmp_path):
    """A job that failed on the config or data cannot be helped by --resume (the run keeps
    both); one that crashed otherwise (memory, a killed worker) can."""
    from gliotl.core.runs.jobs import JobFailure, JobsOutcome
    from gliotl.core.runs.rundir import RunDir
    from gliotl.errors import GliotlError

    run = RunDir(tmp_path)
    user = JobsOutcome({}, [JobFailure("j", "GliotlError: training fold has a single class", 1)])
    with pytest.raises(GliotlError) as caught:
        user.raise_on_failure(run)
    assert "--overwrite" in str(caught.value) and "--resume" not in str(caught.value)
    crash = JobsOutcome({}, [JobFailure("j", "MemoryError: out of memory", 1)])
    with pytest.raises(GliotlError) as caught:
        crash.raise_on_failure(run)
    assert "rerun with --resume" in str(caught.value)
