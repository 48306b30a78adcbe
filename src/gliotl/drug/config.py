"""The drug-response experiment config: datasets, transfer steps, methods and evaluation.

One YAML file describes a whole experiment. Steps name a dataset, a drug and a measure; methods
are transfer chains over steps (the paper's one- and two-step models, any length), or baselines.
The target step is evaluated by repeated K-fold CV on splits saved with the run and shared by
every method. Every section is typed: a typo anywhere (a method's params, a network or training
key, a dataset field) is one error at load, naming the file and the field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from gliotl.core.config import SEED_MAX, ConfigPath, PathPart, SafeName, StrictModel, load_config
from gliotl.drug.data.loaders import DatasetSpec, spec_model
from gliotl.drug.network.model import FINETUNE, PRETRAIN, NetworkConfig, TrainConfig
from gliotl.drug.network.transfer import TransferPolicy


def by_kind(lookup: Callable[[Any], type[BaseModel] | None]) -> WrapValidator:
    """Validate a ``kind``-tagged mapping against its own model (``lookup(kind)``) directly, so
    an error names ``datasets.x.path`` rather than the union's tag (``datasets.x.table.path``);
    an unknown kind falls through to the union, which names the kinds it accepts."""

    def validate(data: Any, handler: Any, info: ValidationInfo) -> Any:
        model = lookup(data.get("kind")) if isinstance(data, dict) else None
        if model is None:
            return handler(data)
        return model.model_validate(data, context=info.context)

    return WrapValidator(validate)


_POLICIES = {m.model_fields["kind"].default: m for m in get_args(get_args(TransferPolicy)[0])}
Transfer = Annotated[TransferPolicy, by_kind(_POLICIES.get)]
Dataset = Annotated[DatasetSpec, by_kind(spec_model)]


def override_model(model: type[StrictModel], doc: str, name: str) -> type[StrictModel]:
    """``model`` with every field optional (None: keep the preset), its constraints kept;
    ``name`` is the module attribute it is bound to, so that pickle (pool workers, Ray) finds
    the class again."""
    fields: dict[str, Any] = {}
    for key, info in model.model_fields.items():
        annotation: Any = info.annotation
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        fields[key] = (annotation | None, None)
    return create_model(name, __base__=StrictModel, __doc__=doc, **fields)


NetworkOverride = override_model(NetworkConfig, "Network keys a method changes.",
                                 "NetworkOverride")
TrainOverride = override_model(TrainConfig, "Training keys that replace a preset's.",
                               "TrainOverride")


def apply_override(base: StrictModel, override: StrictModel) -> Any:
    """``base`` with the keys ``override`` sets, validated as a whole (lengths must agree)."""
    changes = override.model_dump(exclude_none=True)
    return type(base).model_validate({**base.model_dump(), **changes})


class TrainPresets(StrictModel):
    """Overrides of the paper's ``pretrain`` (source models) / ``finetune`` (after a transfer)."""

    pretrain: TrainOverride = TrainOverride()  # type: ignore[valid-type]
    finetune: TrainOverride = TrainOverride()  # type: ignore[valid-type]

    def preset(self, stage: Literal["pretrain", "finetune"]) -> TrainConfig:
        base, override = (PRETRAIN, self.pretrain) if stage == "pretrain" else (
            FINETUNE, self.finetune)
        return apply_override(base, override)


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
    drug: PathPart
    measure: str = "AUC"
    release: str | None = Field(None, description="GDSC1 / GDSC2 filter where the data carry it")
    filters: list[SampleFilter] = []
    scaler: Literal["standard", "robust", "none"] = "standard"
    response: Literal["minmax", "none", "log"] = "minmax"
    train: Literal["pretrain", "finetune"] = "finetune"


class GeneConfig(StrictModel):
    policy: Literal["intersection", "fill"] = "intersection"
    list_file: ConfigPath | None = None


class CVConfig(StrictModel):
    n_splits: int = Field(3, ge=2)
    n_repeats: int = Field(10, ge=1)
    splits_file: ConfigPath | None = None


class EvaluationConfig(StrictModel):
    """How the target results are tested (see :mod:`gliotl.core.evaluation.stats`).

    Method against method: the corrected resampled t-test on per-fold Spearman (the headline
    p), a paired bootstrap over samples (``n_boot_test`` draws) and the Wilcoxon over repeats
    (both secondary). Method against chance: ``n_permutations`` label permutations, each
    refitting the whole target pipeline of ``permutation_methods`` (default: every method) on
    permuted targets over the saved splits; 0 turns it off. The p-value's resolution is
    1 / (n_permutations + 1)."""

    n_permutations: int = Field(0, ge=0)
    permutation_methods: list[str] | None = None
    n_boot_test: int = Field(2000, ge=1)


class PanelConfig(StrictModel):
    """A drug benchmark panel (``gliotl drug benchmark``): the experiment run once per drug,
    each drug replacing the drug of ``steps`` (the target and its intermediate), the source
    kept as the config fixes it (its drug, or ``source_selection`` over its candidates).

    The drug list is a rule fixed before any result: every drug of the target step's dataset,
    measure and release with at least ``min_target_samples`` target samples (after the target
    step's filters) and ``min_step_samples`` in each other panel step, ``exclude`` removed,
    ordered by name (case-folded) and cut to the ``first`` N by that order; or ``drugs``,
    an explicit list kept in its order. ``baselines``: the methods whose best (highest mean
    Spearman on a drug) every other method is compared with on that drug."""

    steps: list[str] = ["intermediate", "target"]
    drugs: list[PathPart] | None = None
    min_target_samples: int = Field(35, ge=3)
    min_step_samples: int = Field(3, ge=3)
    exclude: list[str] = []
    first: int | None = Field(None, ge=1)
    baselines: list[str] = Field(min_length=1)
    alpha: float = Field(0.05, gt=0, lt=1)


class SourceSelection(StrictModel):
    """Pick the source drug by one-step transfer, cross-validated on the intermediate step."""

    step: str = "source"
    candidates: list[PathPart]
    score_on: str = "intermediate"
    cv: CVConfig = CVConfig(n_splits=5, n_repeats=1)


class MethodPreprocessing(StrictModel):
    """A method's own in-fold preprocessing of the target expression, fitted on each training
    fold only. ``scaler``: per-gene scaling (``step``: the target step's ``scaler``, as
    before; ``none``: the expression as prepared). ``top_k_variance``: keep the k genes of
    largest training-fold variance (measured before scaling), only for methods that build on
    no upstream model (their inputs must keep the upstream genes). A model's own internal
    scaling is its param (``standardise`` of elasticnet / prior_elasticnet)."""

    scaler: Literal["step", "standard", "robust", "none"] = "step"
    top_k_variance: int | None = Field(None, ge=1)

    @property
    def is_default(self) -> bool:
        return self.scaler == "step" and self.top_k_variance is None


class MethodConfig(StrictModel):
    """A method compared on the target splits; ``kind`` picks its model among the kinds
    registered in :mod:`gliotl.drug.methods.registry`, each with its own fields and params."""

    name: SafeName
    kind: str
    preprocessing: MethodPreprocessing = MethodPreprocessing()

    @model_validator(mode="wrap")
    @classmethod
    def _by_kind(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        if cls is not MethodConfig or not isinstance(data, dict):
            return handler(data)
        from gliotl.drug.methods.registry import method_kinds

        kinds = method_kinds()
        kind = data.get("kind")
        if kind not in kinds:
            message = f"unknown method kind {kind!r}; expected one of {', '.join(kinds)}"
            raise ValidationError.from_exception_data("MethodConfig", [InitErrorDetails(
                type=PydanticCustomError("unknown_kind", message), loc=("kind",), input=kind)])
        return kinds[kind].config.model_validate(data, context=info.context)

    def steps(self) -> list[str]:
        """The steps before the target this method builds on (none by default)."""
        return []

    def references(self) -> list[str]:
        """Other methods this one is made of (none by default)."""
        return []


class ChainMethod(MethodConfig):
    """A method that builds on models of earlier steps (``chain``, target excluded)."""

    chain: list[str] = []

    def steps(self) -> list[str]:
        return list(self.chain)


class ExperimentConfig(StrictModel):
    name: SafeName
    seed: int = Field(0, ge=0, le=SEED_MAX)
    datasets: dict[str, Dataset]
    genes: GeneConfig = GeneConfig()
    steps: dict[SafeName, StepConfig]
    target: str = "target"
    source_selection: SourceSelection | None = None
    source_cv: CVConfig | None = Field(
        None, description="paper experiment 1: K-fold CV of each source model on its own data"
    )
    target_cv: CVConfig = CVConfig()
    network: NetworkConfig = NetworkConfig()
    train: TrainPresets = TrainPresets()
    methods: list[SerializeAsAny[MethodConfig]] = Field(min_length=1)
    reference: str = "two_step"
    n_boot: int = Field(1000, ge=1, description="bootstrap resamples of the 95% intervals")
    evaluation: EvaluationConfig = EvaluationConfig()
    panel: PanelConfig | None = None

    @model_validator(mode="after")
    def _check_steps(self) -> ExperimentConfig:
        if self.target not in self.steps:
            raise ValueError(f"target step '{self.target}' is not defined under steps")
        for step_name, step in self.steps.items():
            if step.dataset not in self.datasets:
                raise ValueError(f"step '{step_name}' uses unknown dataset '{step.dataset}'")
        return self

    @model_validator(mode="after")
    def _check_methods(self) -> ExperimentConfig:
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError("method names must be unique")
        for method in self.methods:
            for step in method.steps():
                if step not in self.steps or step == self.target:
                    raise ValueError(
                        f"method '{method.name}': chain step '{step}' must be a non-target step"
                    )
            for candidate in method.references():
                if candidate not in names or candidate == method.name:
                    raise ValueError(f"method '{method.name}': unknown candidate '{candidate}'")
        if self.reference not in names:
            raise ValueError(f"reference method '{self.reference}' is not among the methods")
        return self

    @model_validator(mode="after")
    def _check_preprocessing(self) -> ExperimentConfig:
        by_name = {m.name: m for m in self.methods}
        for method in self.methods:
            if method.preprocessing.top_k_variance is not None and method.steps():
                raise ValueError(f"method '{method.name}': preprocessing.top_k_variance needs a "
                                 "method without upstream models (its chain fixes the genes)")
            for name in method.references():
                if name in by_name and not by_name[name].preprocessing.is_default:
                    raise ValueError(f"method '{method.name}': candidate '{name}' sets "
                                     "preprocessing; candidates see the selector's inputs, so "
                                     "set it on the nested method")
        return self

    @model_validator(mode="after")
    def _check_evaluation(self) -> ExperimentConfig:
        names = {m.name for m in self.methods}
        for name in self.evaluation.permutation_methods or []:
            if name not in names:
                raise ValueError(f"evaluation.permutation_methods: unknown method '{name}'")
        return self

    @model_validator(mode="after")
    def _check_panel(self) -> ExperimentConfig:
        panel = self.panel
        if panel is None:
            return self
        names = {m.name for m in self.methods}
        for step in panel.steps:
            if step not in self.steps:
                raise ValueError(f"panel.steps: unknown step '{step}'")
        if self.target not in panel.steps:
            raise ValueError(f"panel.steps: must include the target step '{self.target}'")
        for name in panel.baselines:
            if name not in names:
                raise ValueError(f"panel.baselines: unknown method '{name}'")
        return self

    @model_validator(mode="after")
    def _check_sources(self) -> ExperimentConfig:
        sel = self.source_selection
        if sel is not None and (sel.step not in self.steps or sel.score_on not in self.steps):
            raise ValueError("source_selection: step and score_on must name steps")
        if self.source_cv is not None and sel is None and not self.methods[0].steps():
            raise ValueError("source_cv without source_selection cross-validates the first "
                             "step of the first method's chain; that method has no chain")
        return self


def load_experiment_config(path: str | Path, overrides: Sequence[str] = ()
                           ) -> tuple[ExperimentConfig, Path]:
    """Load and validate (``--set`` overrides applied first, paths resolved against the
    file's folder); returns the config and that folder."""
    return load_config(ExperimentConfig, path, overrides), Path(path).resolve().parent
