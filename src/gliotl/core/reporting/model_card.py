"""The model card of a run (``model_card.md``): what was trained on what, how it was
evaluated, how well it did, and what it must not be used for, in one page a reader can check
before reusing a model. Each system builds its card from the run's own files
(:mod:`gliotl.drug.pipeline.model_card`, :mod:`gliotl.mgmt.pipeline.model_card`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gliotl.core.io import write_text
from gliotl.core.runs.rundir import RunDir

MODEL_CARD = "model_card.md"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; floats to 3 decimals, missing values blank."""
    header = "| " + " | ".join(_cell(str(c)) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


@dataclass
class ModelCard:
    """A title and the card's sections, in order, each a heading and Markdown text."""

    title: str
    sections: list[tuple[str, str]] = field(default_factory=list)

    def add(self, heading: str, *paragraphs: str) -> None:
        self.sections.append((heading, "\n\n".join(p.strip() for p in paragraphs if p)))

    def to_markdown(self) -> str:
        parts = [f"# {self.title}"]
        parts += [f"## {heading}\n\n{body}" for heading, body in self.sections]
        return "\n\n".join(parts) + "\n"


def bullet_list(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def run_provenance(run: RunDir) -> str:
    """Which gliotl, commit, seed and overrides made the run (from its manifest)."""
    manifest = run.manifest()
    items = [f"gliotl {manifest.get('gliotl_version', '?')}, git commit "
             f"{manifest.get('git_commit') or 'unknown'}, seed {manifest.get('seed')}",
             f"started {manifest.get('started', '?')} on "
             f"{manifest.get('host', '?')}"]
    if manifest.get("overrides"):
        items.append("command-line overrides: " + ", ".join(
            f"`--set {text}`" for text in manifest["overrides"]))
    items.append("full resolved config: `config.yaml`; splits: `splits.csv`; every prediction: "
                 "`predictions.csv`; all statistics: `metrics.json`")
    return bullet_list(items)


def write_model_card(run: RunDir, card: ModelCard) -> None:
    """Write the card into the run, atomically."""
    write_text(run.path / MODEL_CARD, card.to_markdown())


__all__ = ["MODEL_CARD", "ModelCard", "bullet_list", "markdown_table", "run_provenance",
           "write_model_card"]
