"""``gliotl demo`` reuses a finished part only when it ran with the requested config, and a
relative ``--out`` resolves once, whatever the working folder (it was once doubled:
``runs/demo/runs/demo/...``). No part is trained here: the parts are planted or refused."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from clirun import run_gliotl
from gliotl.core.config import config_to_dict
from gliotl.demo import demo_drug_config


def _plant_finished(folder: Path, config: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "manifest.json").write_text(json.dumps({"status": "finished",
                                                      "gliotl_run": 1}))


def test_relative_out_resolves_once_from_any_folder(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config, source = demo_drug_config(True, Path("runs/demo"))
    path = Path(config.datasets["syn"].path)
    assert source == "synthetic" and path.is_absolute() and path.is_dir()
    assert str(path).count("runs/demo") == 1
    assert path.is_relative_to((tmp_path / "elsewhere" / "runs" / "demo").resolve())


def test_a_finished_part_of_another_config_is_refused_not_reused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    quick, _ = demo_drug_config(True, tmp_path / "demo")
    other = config_to_dict(quick)
    other["n_boot"] = other["n_boot"] + 1  # as if a different variant had run here
    _plant_finished(tmp_path / "demo" / "drug", other)
    before = (tmp_path / "demo" / "drug" / "config.yaml").read_bytes()
    code, _, err = run_gliotl(["demo", "--quick", "--out", "demo"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert "n_boot" in lines[0] and "--overwrite" in lines[0] and "config.yaml" in lines[0]
    assert (tmp_path / "demo" / "drug" / "config.yaml").read_bytes() == before
    assert not (tmp_path / "demo" / "mgmt").exists()


def test_a_finished_part_of_the_same_config_is_reused(tmp_path):
    from gliotl.demo import _run_or_reuse

    config, _ = demo_drug_config(True, tmp_path)
    _plant_finished(tmp_path / "drug", config_to_dict(config))
    calls: list[tuple] = []
    run = _run_or_reuse(lambda *a: calls.append(a), tmp_path / "drug", False, config)
    assert run.path == tmp_path / "drug" and calls == []
