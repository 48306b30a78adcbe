"""The drug-response experiment config: datasets, transfer steps, methods and evaluation.

One YAML file describes a whole experiment. Steps name a dataset, a drug and a measure; methods
are transfer chains over steps (the paper's one- and two-step models, any length), or baselines.
The target step is evaluated by repeated K-fold CV on splits saved with the run and shared by
every method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from gliotl.core.config import StrictModel, load_yaml, validate_config
from gliotl.errors import GliotlError


class SampleFilter(StrictModel):
    """Keep samples whose annotation ``column`` matches; used to separate glioma / non-glioma."""

    column: str
    equals: str | None = None
    not_equals: str | None = None
    isin: list[str] | None = None
    not_in: list[str] | None = None


class StepConfig(StrictModel):
    """One dataset + drug + measure that a model is trained on."""

    dataset: str
    drug: str
    measure: str = "AUC"
    release: str | None = Field(None, description="GDSC1 / GDSC2 filter where the data carry it")
    filters: list[SampleFilter] = []
    scaler: Literal["standard", "robust", "none"] = "standard"
    response: Literal["minmax", "none", "log"] = "minmax"
    train: Literal["pretrain", "finetune"] = "finetune"


class GeneConfig(StrictModel):
    policy: Literal["intersection", "fill"] = "intersection"
    list_file: str | None = None


class CVConfig(StrictModel):
    n_splits: int = Field(3, ge=2)
    n_repeats: int = Field(10, ge=1)
    splits_file: str | None = None


class SourceSelection(StrictModel):
    """Pick the source drug by one-step transfer, cross-validated on the intermediate step."""

    step: str = "source"
    candidates: list[str]
    score_on: str = "intermediate"
    cv: CVConfig = CVConfig(n_splits=5, n_repeats=1)


class MethodConfig(StrictModel):
    """A method compared on the target splits.

    kinds: ``network`` (a transfer chain; ``chain`` lists the steps before the target, empty for
    target-only), ``mean``, ``elasticnet``, ``random_forest``, ``mgmt_status`` (annotation column),
    ``prior_elasticnet`` (ElasticNet shrunk toward a linear model of ``chain[0]``), ``stacking``
    (the prediction of the chain's network as an offset / feature), ``multitask`` (trunk pretrained
    on ``drugs`` of ``chain[0]``'s dataset), ``nested`` (inner-CV selection among ``candidates``).
    """

    name: str
    kind: Literal[
        "network", "mean", "elasticnet", "random_forest", "mgmt_status", "prior_elasticnet",
        "stacking", "multitask", "nested",
    ]
    chain: list[str] = []
    transfer: dict[str, Any] = {"kind": "paper"}
    column: str = "mgmt_status"
    mode: Literal["offset", "feature"] = "offset"
    drugs: list[str] = []
    candidates: list[str] = []
    params: dict[str, Any] = {}


class ExperimentConfig(StrictModel):
    name: str
    seed: int = 0
    datasets: dict[str, dict[str, Any]]
    genes: GeneConfig = GeneConfig()
    steps: dict[str, StepConfig]
    target: str = "target"
    source_selection: SourceSelection | None = None
    source_cv: CVConfig | None = Field(
        None, description="paper experiment 1: K-fold CV of each source model on its own data"
    )
    target_cv: CVConfig = CVConfig()
    network: dict[str, Any] = {}
    train: dict[str, dict[str, Any]] = {}
    methods: list[MethodConfig]
    reference: str = "two_step"
    n_boot: int = 1000

    @model_validator(mode="after")
    def _check_references(self) -> ExperimentConfig:
        if self.target not in self.steps:
            raise ValueError(f"target step '{self.target}' is not defined under steps")
        for step_name, step in self.steps.items():
            if step.dataset not in self.datasets:
                raise ValueError(f"step '{step_name}' uses unknown dataset '{step.dataset}'")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError("method names must be unique")
        for method in self.methods:
            for step in method.chain:
                if step not in self.steps or step == self.target:
                    raise ValueError(
                        f"method '{method.name}': chain step '{step}' must be a non-target step"
                    )
            for candidate in method.candidates:
                if candidate not in names or candidate == method.name:
                    raise ValueError(f"method '{method.name}': unknown candidate '{candidate}'")
        if self.reference not in names:
            raise ValueError(f"reference method '{self.reference}' is not among the methods")
        if self.source_selection is not None:
            sel = self.source_selection
            if sel.step not in self.steps or sel.score_on not in self.steps:
                raise ValueError("source_selection: step and score_on must name steps")
        return self


def load_experiment_config(path: str | Path) -> tuple[ExperimentConfig, Path]:
    """Load and validate; returns the config and the folder that relative paths refer to."""
    path = Path(path)
    data = load_yaml(path)
    try:
        config = validate_config(ExperimentConfig, data, path)
    except GliotlError:
        raise
    return config, path.resolve().parent
