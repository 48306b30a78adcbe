"""Strict configs: pydantic models that reject unknown keys, loaded from YAML, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
)

from gliotl.errors import GliotlError, input_error

ConfigT = TypeVar("ConfigT", bound="StrictModel")


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _resolve_against_base(value: str, info: ValidationInfo) -> str:
    base = (info.context or {}).get("base_dir")
    if base is None or not value or Path(value).expanduser().is_absolute():
        return str(Path(value).expanduser()) if value else value
    return str((Path(base) / value).resolve())


def _path_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, os.PathLike) else value


ConfigPath = Annotated[str, BeforeValidator(_path_as_text), AfterValidator(_resolve_against_base)]
"""A path in a config: relative to the config file's folder, absolute once validated with the
``base_dir`` context (:func:`validate_config` passes it), so jobs and ``--resume`` read the same
files from any working directory and the run records where they were."""


def resolve_config_paths(config: ConfigT, base_dir: str | Path) -> ConfigT:
    """The same config with every :data:`ConfigPath` made absolute against ``base_dir``."""
    return type(config).model_validate(config.model_dump(), context={"base_dir": Path(base_dir)})


def format_validation_error(exc: ValidationError, source: str | Path) -> GliotlError:
    """Turn pydantic's multi-line report into one line naming the key and what was expected."""
    # An unknown key is usually a typo of a key reported as missing: name the typo first.
    errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
    err = errors[0]
    key = ".".join(str(part) for part in err.get("loc", ())) or "<root>"
    if err.get("type") == "extra_forbidden":
        expected = "unknown config key"
    else:
        expected = err.get("msg", "invalid value")
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return input_error(source, key, expected + more)


def validate_config(model: type[ConfigT], data: dict[str, Any], source: str | Path,
                    base_dir: str | Path | None = None) -> ConfigT:
    """Validate ``data`` read from ``source``; :data:`ConfigPath` fields resolve against
    ``base_dir`` (default: the folder of ``source``)."""
    base = Path(base_dir) if base_dir is not None else Path(source).resolve().parent
    try:
        return model.model_validate(data, context={"base_dir": base})
    except ValidationError as exc:
        raise format_validation_error(exc, source) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise input_error(path, None, f"invalid YAML{where}") from None
    if data is None:
        raise input_error(path, None, "config file is empty")
    if not isinstance(data, dict):
        raise input_error(path, None, "expected a mapping of config keys at the top level")
    return data


def load_config(model: type[ConfigT], path: str | Path) -> ConfigT:
    """Load and validate a YAML config; its :data:`ConfigPath` fields resolve against its folder."""
    return validate_config(model, load_yaml(path), path)


def config_to_dict(config: BaseModel) -> dict[str, Any]:
    """The resolved config as plain YAML-able data (defaults filled in)."""
    return config.model_dump(mode="json")
