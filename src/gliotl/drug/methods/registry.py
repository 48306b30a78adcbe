"""Method kinds: one registry entry per ``kind`` holds everything the engine needs to know.

An entry is a config model (its ``kind`` literal, fields and ``params``), what upstream artefact
the method builds on (a network trained along its chain, a linear model of its source step, a
multi-task trunk, or nothing), a builder (config + upstream -> scikit-learn style estimator with
``fit(X, y)`` / ``predict``) and whether a final model is saved for ``gliotl drug predict``.
The engine asks the registry, never a kind's name, so a new kind is one :func:`register_method`
call; the config's ``methods`` accept every registered kind.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, get_args

from pydantic import Field, SerializeAsAny, ValidationInfo, create_model, field_validator
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from gliotl.core.config import StrictModel
from gliotl.drug.config import (
    ChainMethod,
    MethodConfig,
    NetworkOverride,
    TrainOverride,
    Transfer,
    apply_override,
)
from gliotl.drug.methods.baselines import (
    MGMTStatusRegressor,
    RandomForestBaseline,
    TrainingMeanRegressor,
    TunedElasticNet,
)
from gliotl.drug.methods.linear_transfer import TunedPriorCentredElasticNet
from gliotl.drug.methods.selection import SCORINGS, Candidate, NestedSelector
from gliotl.drug.methods.sklearn_regressor import SklearnMethod, build_sklearn
from gliotl.drug.methods.stacking import SourcePredictionOffset, SourcePredictionStacker
from gliotl.drug.network.model import NetworkConfig, TrainConfig
from gliotl.drug.network.transfer import PaperTransfer


class Needs(Enum):
    """The upstream artefact a method kind is built on."""

    NOTHING = "nothing"
    NETWORK_CHAIN = "network_chain"  # a network trained step after step along ``chain``
    SOURCE_LINEAR = "source_linear"  # a linear model of ``chain[0]``
    MULTITASK_TRUNK = "multitask_trunk"  # a trunk pretrained on ``drugs`` of ``chain[0]``


@dataclass(frozen=True)
class BuildContext:
    """What a builder may use besides its own config: the experiment's network and fine-tuning
    settings, every method's upstream artefact path (by method name), the methods (for nested
    selection) and the job's seed."""

    network: NetworkConfig
    finetune: TrainConfig
    seed: int
    artefacts: Mapping[str, str] = field(default_factory=dict)
    methods: Mapping[str, MethodConfig] = field(default_factory=dict)

    def build(self, method: MethodConfig) -> Any:
        return method_kind(method.kind).build(method, self)


@dataclass(frozen=True)
class MethodKind:
    """One method kind. ``annotation`` names the annotation column that a kind reads instead
    of expression (then it is fitted on raw responses, without step preprocessing)."""

    config: type[MethodConfig]
    build: Callable[[Any, BuildContext], Any]
    needs: Needs = Needs.NOTHING
    saves_final: bool = False
    annotation: Callable[[Any], str] | None = None

    @property
    def kind(self) -> str:
        return get_args(self.config.model_fields["kind"].annotation)[0]


_KINDS: dict[str, MethodKind] = {}


def register_method(entry: MethodKind, replace: bool = False) -> MethodKind:
    """Add a kind; configs loaded afterwards accept it."""
    if entry.kind in _KINDS and not replace:
        raise ValueError(f"method kind '{entry.kind}' is already registered")
    _KINDS[entry.kind] = entry
    return entry


def method_kinds() -> dict[str, MethodKind]:
    return dict(_KINDS)


def method_kind(kind: str) -> MethodKind:
    return _KINDS[kind]


def params_model(estimator: type, exclude: tuple[str, ...] = ("seed",),
                 types: Mapping[str, Any] | None = None, grid: bool = True,
                 model_name: str | None = None) -> type[StrictModel]:
    """A strict params model from ``estimator.__init__``: its parameters (minus ``exclude``),
    their defaults and type hints (``types`` replaces hints that YAML cannot express). With
    ``grid``, a nested-selection candidate may also list a ``grid`` over those parameters."""
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(estimator, eval_str=True).parameters.items():
        if name in exclude:
            continue
        hint = Any if parameter.annotation is inspect.Parameter.empty else parameter.annotation
        annotation = (types or {}).get(name, hint)
        default = parameter.default
        fields[name] = (annotation, ... if default is inspect.Parameter.empty else default)
    names = sorted(fields)
    validators = {}
    if grid:
        fields["grid"] = (dict[str, list[Any]], Field(default_factory=dict, description=(
            "nested selection: values of these params to choose among (candidates only)")))

        def _grid_keys(value: dict[str, list[Any]]) -> dict[str, list[Any]]:
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise ValueError(f"grid key '{unknown[0]}' is not a param ({', '.join(names)})")
            return value

        validators["_grid_keys"] = field_validator("grid")(_grid_keys)
    # ``model_name``: the module attribute the model is bound to, so that pickle (pool workers,
    # Ray) finds the class again; default ``<Estimator>Params``.
    return create_model(model_name or f"{estimator.__name__}Params", __base__=StrictModel,
                        __validators__=validators, **fields)


def estimator_params(params: StrictModel) -> dict[str, Any]:
    """The estimator's keyword arguments (the nested-selection grid is not one of them)."""
    return {k: v for k, v in params.model_dump().items() if k != "grid"}


def params_grid(method: MethodConfig) -> dict[str, list[Any]]:
    params = getattr(method, "params", None)
    return dict(getattr(params, "grid", {}) or {})


# -- networks ---------------------------------------------------------------------------------


class SourceNetworkFineTuner(RegressorMixin, BaseEstimator):
    """Fine-tune a network on the target, initialised from an upstream network by a policy."""

    def __init__(self, network=None, train=None, transfer=None, source_path=None, seed=0):
        self.network = network
        self.train = train
        self.transfer = transfer
        self.source_path = source_path
        self.seed = seed

    def fit(self, X, y):
        from gliotl.drug.network.estimators import NetworkRegressor

        source = NetworkRegressor.load(self.source_path) if self.source_path else None
        transfer = self.transfer if source is not None else None
        self.model_ = NetworkRegressor(
            network=self.network, train=self.train, transfer=transfer, seed=self.seed
        ).fit(X, y, source=source)
        self.n_features_in_ = self.model_.n_features_in_
        return self

    def predict(self, X):
        check_is_fitted(self, "model_")
        return self.model_.predict(X)


class SourcePredictor:
    """A frozen upstream network used as a predictor (for prediction-level transfer)."""

    def __init__(self, path: str):
        from gliotl.drug.network.estimators import NetworkRegressor

        self.model = NetworkRegressor.load(path)

    def predict(self, X):
        return self.model.predict(X)


class NetworkParams(StrictModel):
    """A network method's changes to the experiment's ``network`` / ``train.finetune``."""

    network: NetworkOverride = NetworkOverride()  # type: ignore[valid-type]  # built by create_model
    train: TrainOverride = TrainOverride()  # type: ignore[valid-type]  # built by create_model
    grid: dict[str, list[Any]] = {}

    @field_validator("grid")
    @classmethod
    def _grid_keys(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        allowed = set(inspect.signature(SourceNetworkFineTuner).parameters)
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(f"grid key '{unknown[0]}' is not one of {', '.join(sorted(allowed))}")
        return value


class NetworkMethod(ChainMethod):
    """A transfer chain: fine-tune from the network trained along ``chain`` (empty:
    target-only)."""

    kind: Literal["network"]
    transfer: Transfer = PaperTransfer()
    params: NetworkParams = NetworkParams()


class MultitaskMethod(ChainMethod):
    """Fine-tune from a trunk pretrained on ``drugs`` of ``chain[0]``'s dataset."""

    kind: Literal["multitask"]
    chain: list[str] = Field(min_length=1)
    drugs: list[str] = Field(min_length=1)
    transfer: Transfer = PaperTransfer()
    params: NetworkParams = NetworkParams()


def _fine_tuner(method: NetworkMethod | MultitaskMethod, ctx: BuildContext,
                source: str | None) -> SourceNetworkFineTuner:
    return SourceNetworkFineTuner(
        network=apply_override(ctx.network, method.params.network),
        train=apply_override(ctx.finetune, method.params.train),
        transfer=method.transfer, source_path=source, seed=ctx.seed,
    )


def _build_network(method: NetworkMethod, ctx: BuildContext) -> SourceNetworkFineTuner:
    return _fine_tuner(method, ctx, ctx.artefacts[method.name] if method.chain else None)


def _build_multitask(method: MultitaskMethod, ctx: BuildContext) -> SourceNetworkFineTuner:
    return _fine_tuner(method, ctx, ctx.artefacts[method.name])


# -- baselines and linear transfer ------------------------------------------------------------


class MeanMethod(MethodConfig):
    """The training mean (no features)."""

    kind: Literal["mean"]


class MGMTStatusMethod(MethodConfig):
    """The training mean of each MGMT status group (annotation ``column``)."""

    kind: Literal["mgmt_status"]
    column: str = "mgmt_status"


ElasticNetParams = params_model(TunedElasticNet, model_name="ElasticNetParams")
RandomForestParams = params_model(RandomForestBaseline, model_name="RandomForestParams")
PriorElasticNetParams = params_model(
    TunedPriorCentredElasticNet, exclude=("source_coef", "source_intercept", "seed"),
    model_name="PriorElasticNetParams")
NestedParams = params_model(NestedSelector, exclude=("candidates", "seed"),
                            types={"scoring": Literal[SCORINGS]}, grid=False,
                            model_name="NestedParams")


class ElasticNetMethod(MethodConfig):
    kind: Literal["elasticnet"]
    params: ElasticNetParams = ElasticNetParams()  # type: ignore[valid-type]  # built by create_model


class RandomForestMethod(MethodConfig):
    kind: Literal["random_forest"]
    params: RandomForestParams = RandomForestParams()  # type: ignore[valid-type]  # built by create_model


class PriorElasticNetMethod(ChainMethod):
    """ElasticNet shrunk toward a linear model of ``chain[0]``."""

    kind: Literal["prior_elasticnet"]
    chain: list[str] = Field(min_length=1)
    params: PriorElasticNetParams = PriorElasticNetParams()  # type: ignore[valid-type]  # built by create_model


def _build_prior(method: PriorElasticNetMethod, ctx: BuildContext) -> Any:
    from gliotl.drug.methods.linear_transfer import load_source_linear

    coef, intercept = load_source_linear(ctx.artefacts[method.name])
    return TunedPriorCentredElasticNet(source_coef=coef, source_intercept=intercept,
                                        seed=ctx.seed, **estimator_params(method.params))


# -- stacking and nested selection ------------------------------------------------------------

# The stackers keep their own default seed (0): the engine never passed them the job's.
OffsetStackingParams = params_model(
    SourcePredictionOffset, exclude=("source", "seed"),
    types={"correction": Literal["ridge", "elasticnet", "none"]},
    model_name="OffsetStackingParams")
FeatureStackingParams = params_model(
    SourcePredictionStacker, exclude=("source", "seed"),
    types={"target_model": Literal["mean", "elasticnet", "ridge"]},
    model_name="FeatureStackingParams")
_STACKING_PARAMS = {"offset": OffsetStackingParams, "feature": FeatureStackingParams}


class StackingMethod(ChainMethod):
    """The prediction of the chain's network as an offset / feature of a target model."""

    kind: Literal["stacking"]
    chain: list[str] = Field(min_length=1)
    mode: Literal["offset", "feature"] = "offset"
    params: SerializeAsAny[StrictModel] = Field(default_factory=dict, validate_default=True)

    @field_validator("params", mode="wrap")
    @classmethod
    def _params_of_mode(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        """The params of the stacker that ``mode`` picks."""
        model = _STACKING_PARAMS[info.data.get("mode", "offset")]
        return value if isinstance(value, model) else model.model_validate(value)


def _build_stacking(method: StackingMethod, ctx: BuildContext) -> Any:
    source = SourcePredictor(ctx.artefacts[method.name])
    cls = SourcePredictionOffset if method.mode == "offset" else SourcePredictionStacker
    return cls(source=source, **estimator_params(method.params))


class NestedMethod(MethodConfig):
    """Inner-CV selection among ``candidates`` (other methods, each with its own ``grid``)."""

    kind: Literal["nested"]
    candidates: list[str] = Field(min_length=1)
    params: NestedParams = NestedParams()  # type: ignore[valid-type]  # built by create_model

    def references(self) -> list[str]:
        return list(self.candidates)


def _build_nested(method: NestedMethod, ctx: BuildContext) -> NestedSelector:
    candidates = [Candidate(name, ctx.build(ctx.methods[name]), params_grid(ctx.methods[name]))
                  for name in method.candidates]
    return NestedSelector(candidates, seed=ctx.seed, **estimator_params(method.params))


for _entry in (
    MethodKind(NetworkMethod, _build_network, Needs.NETWORK_CHAIN, saves_final=True),
    MethodKind(MeanMethod, lambda method, ctx: TrainingMeanRegressor()),
    MethodKind(ElasticNetMethod, lambda method, ctx: TunedElasticNet(
        seed=ctx.seed, **estimator_params(method.params))),
    MethodKind(RandomForestMethod, lambda method, ctx: RandomForestBaseline(
        seed=ctx.seed, **estimator_params(method.params))),
    MethodKind(MGMTStatusMethod, lambda method, ctx: MGMTStatusRegressor(),
               annotation=lambda method: method.column),
    MethodKind(PriorElasticNetMethod, _build_prior, Needs.SOURCE_LINEAR),
    MethodKind(StackingMethod, _build_stacking, Needs.NETWORK_CHAIN),
    MethodKind(MultitaskMethod, _build_multitask, Needs.MULTITASK_TRUNK, saves_final=True),
    MethodKind(NestedMethod, _build_nested),
    MethodKind(SklearnMethod, build_sklearn),
):
    register_method(_entry)
