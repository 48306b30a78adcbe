"""The MGMT-from-MRI experiment config (Schmitz et al. 2024 protocol, gliotl defaults).

One YAML file describes a whole experiment: the cohort (UPenn-GBM, RSNA-MICCAI, any cohort
table, or a generated phantom), preprocessing, modalities and how they enter the network,
the backbone and its pretrained weights (or a segmentation pretraining stage that makes
MedicalNet-format weights), the compared methods, training, splits and late fusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gliotl.core.config import (
    SEED_MAX,
    ConfigPath,
    SafeName,
    StrictModel,
    load_yaml,
    validate_config,
)
from gliotl.errors import GliotlError
from gliotl.mgmt.data.dataset import AugmentConfig
from gliotl.mgmt.data.modalities import MODALITIES, MODALITY_GROUPS, resolve_modalities
from gliotl.mgmt.data.preprocess import PreprocessConfig
from gliotl.mgmt.data.source import CohortConfig
from gliotl.mgmt.methods import METHODS, method_spec

DEFAULT_GROUPS: dict[str, list[str]] = {
    "struct": list(MODALITY_GROUPS["struct"]),
    "dti": list(MODALITY_GROUPS["dti"]),
    "dsc": list(MODALITY_GROUPS["dsc"]),
    "struct+dti": [*MODALITY_GROUPS["struct"], *MODALITY_GROUPS["dti"]],
    "struct+dsc": [*MODALITY_GROUPS["struct"], *MODALITY_GROUPS["dsc"]],
    "dti+dsc": [*MODALITY_GROUPS["dti"], *MODALITY_GROUPS["dsc"]],
    "all": list(MODALITIES),
}
"""The paper's modality groups scored by late fusion (restricted to the configured modalities)."""


class PretrainConfig(StrictModel):
    """Segmentation pretraining that stands in for MedicalNet weights (see mgmt.pretrain)."""

    cohort: CohortConfig
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=4, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    shape: tuple[Annotated[int, Field(ge=8)], Annotated[int, Field(ge=8)],
                 Annotated[int, Field(ge=8)]] = Field(default=(32, 40, 40),
                                                     description="(D, H, W) network input")
    modalities: list[str] | None = Field(default=None, description="default: the experiment's")
    max_patients: int | None = Field(default=None, ge=1)

    @field_validator("modalities")
    @classmethod
    def _resolve(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _resolve_or_raise(value)


class ModelConfig(StrictModel):
    depth: Literal[10, 18, 34, 50, 101, 152, 200] = 50
    weights: ConfigPath | None = Field(default=None,
                                       description="MedicalNet checkpoint; null -> pretrain/none")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    shortcut_type: Literal["A", "B"] | None = None
    pretrain: PretrainConfig | None = None


class TrainingConfig(StrictModel):
    epochs: int = Field(default=90, ge=1)
    batch_size: int = Field(default=12, ge=1)
    eval_batch_size: int = Field(default=12, ge=1)
    lr_backbone: float = Field(default=1e-5, gt=0, description="paper: 1e-5")
    lr_policy: float = Field(default=1e-4, gt=0, description="paper: 1e-4 (SpotTune's policy)")
    weight_decay: float = Field(default=1e-8, ge=0)
    temperature: float = Field(
        default=100.0, gt=0, description="Gumbel-softmax temperature (paper 100)"
    )
    final_temperature: float | None = Field(
        default=None, gt=0, description="anneal to this; null: fixed"
    )
    spottune_budget: int | None = Field(
        default=None, ge=0, description="SpotTune-global: k tuned blocks"
    )
    plateau_factor: float = Field(default=0.5, gt=0, lt=1)
    plateau_patience: int = Field(default=10, ge=0)
    balancing: Literal["undersample", "weighted_loss", "none"] = "undersample"
    augment: AugmentConfig | None = AugmentConfig()
    amp: bool = True
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto",
        description="auto: fp16 autocast on CUDA when amp, else fp32; bf16 autocasts on any device",
    )
    channels_last: bool = Field(default=False, description="channels_last_3d layout")
    cudnn_benchmark: bool = Field(default=False, description="cuDNN autotuning (CUDA only)")
    spottune_split_batches: Literal["index", "whole"] = Field(
        default="index", description="SpotTune eval, split batch: per-sample or whole-batch",
    )
    resident_cohort: bool = Field(
        default=False, description="hold each fold's volumes (float16, as cached) on the "
        "training device and augment there: no disk reads or host-to-device copies per batch "
        "(240 patients x 11 modalities at 70x86x86 is about 2.7 GB)",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    trainings_per_gpu: int = Field(
        default=1, ge=1, description="fold trainings sharing one GPU: each job reserves "
        "1/N of a GPU on Ray; locally, --workers N runs N at once on the machine's GPU",
    )
    num_workers: int = Field(default=0, ge=0)
    cpus_per_job: int = Field(default=1, ge=1, description="CPUs (torch threads) each job reserves")


class MethodConfig(StrictModel):
    """A method and optional training overrides (e.g. a larger lr for random init)."""

    name: Literal[METHODS]  # type: ignore[valid-type]  # the registry's names
    training: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check_overrides(self) -> MethodConfig:
        unknown = sorted(set(self.training) - set(TrainingConfig.model_fields))
        if unknown:
            raise ValueError(f"method '{self.name}': unknown training key '{unknown[0]}'")
        return self


class SplitConfig(StrictModel):
    test_size: float = Field(default=0.3, gt=0, lt=1)
    n_splits: int = Field(default=5, ge=2)
    splits_file: ConfigPath | None = None


class FusionConfig(StrictModel):
    """Late fusion: mean probability over a group's modalities.

    ``missing: complete`` scores a group only on patients that have every modality of the group
    (default: the group then means the same thing for every patient); ``available`` averages
    whatever modalities of the group a patient has.
    """

    groups: dict[str, list[str]] = DEFAULT_GROUPS
    missing: Literal["complete", "available"] = "complete"
    threshold: Literal["youden", "fixed"] = "youden"

    @field_validator("groups")
    @classmethod
    def _resolve(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {name: _resolve_or_raise(mods) for name, mods in value.items()}


def _resolve_or_raise(names: list[str]) -> list[str]:
    try:
        return resolve_modalities(names)
    except GliotlError as exc:  # pydantic turns ValueError into a one-line config error
        raise ValueError(str(exc)) from None


class MGMTExperimentConfig(StrictModel):
    name: SafeName
    seed: int = Field(0, ge=0, le=SEED_MAX)
    cohort: CohortConfig
    preprocessing: PreprocessConfig = Field(default_factory=PreprocessConfig)
    cache_dir: ConfigPath | None = Field(
        default=None, description="volume cache; default <run>/cache"
    )
    cache_workers: int = Field(default=1, ge=1)
    modalities: list[str] = list(MODALITIES)
    input_mode: Literal["per_modality", "stacked"] = "per_modality"
    model: ModelConfig = Field(default_factory=ModelConfig)
    methods: list[MethodConfig] = [MethodConfig(name=m) for m in METHODS]
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    n_boot: int = Field(default=1000, ge=0)
    reference: str = "spottune"

    @field_validator("modalities")
    @classmethod
    def _resolve_modalities(cls, value: list[str]) -> list[str]:
        return _resolve_or_raise(value)

    @field_validator("methods", mode="before")
    @classmethod
    def _names_to_methods(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> MGMTExperimentConfig:
        names = [m.name for m in self.methods]
        if not names:
            raise ValueError("methods: at least one method expected")
        if len(set(names)) != len(names):
            raise ValueError("methods: names must be unique")
        if self.reference not in names:
            raise ValueError(f"reference method '{self.reference}' is not among the methods")
        for method in self.methods:
            self.training_for(method.name)
        return self

    # -- derived ---------------------------------------------------------------------------
    def training_for(self, method: str) -> TrainingConfig:
        """The training settings of ``method``: the shared ones with its overrides applied."""
        spec = next(m for m in self.methods if m.name == method)
        return TrainingConfig.model_validate({**self.training.model_dump(),
                                              **method_spec(method).training, **spec.training})

    def units(self) -> list[str]:
        """What one network sees: each modality (per_modality) or the stack of all."""
        return list(self.modalities) if self.input_mode == "per_modality" else ["stacked"]

    def fusion_units(self) -> dict[str, list[str]]:
        """The groups by the units their networks are named after (``modality`` of the
        predictions): the stacked network is its own one-unit group."""
        if self.input_mode == "stacked":
            return {"stacked": ["stacked"]}
        return self.fusion_groups()

    def fusion_groups(self) -> dict[str, list[str]]:
        """Groups restricted to the configured modalities; empty groups dropped, duplicates
        (two groups with the same members) kept once, under the first name."""
        if self.input_mode == "stacked":
            return {"stacked": list(self.modalities)}
        groups: dict[str, list[str]] = {}
        seen: set[tuple[str, ...]] = set()
        for name, members in self.fusion.groups.items():
            present = [m for m in members if m in self.modalities]
            if present and tuple(present) not in seen:
                groups[name] = present
                seen.add(tuple(present))
        return groups


def load_mgmt_config(path: str | Path, overrides: Sequence[str] = ()
                     ) -> tuple[MGMTExperimentConfig, Path]:
    """Load and validate (``--set`` overrides applied first); returns the config and the
    folder that relative paths refer to."""
    path = Path(path)
    config = validate_config(MGMTExperimentConfig, load_yaml(path), path, overrides=overrides)
    return config, path.resolve().parent


__all__ = [
    "DEFAULT_GROUPS",
    "METHODS",
    "CohortConfig",
    "FusionConfig",
    "MGMTExperimentConfig",
    "MethodConfig",
    "ModelConfig",
    "PretrainConfig",
    "SplitConfig",
    "TrainingConfig",
    "load_mgmt_config",
]
