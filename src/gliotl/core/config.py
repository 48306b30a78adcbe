"""Strict configs: pydantic models that reject unknown keys, loaded from YAML, one-line errors."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
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

from gliotl.core.overrides import apply_overrides, override_for
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


SEED_MAX = 2**32 - 1
"""Seeds are non-negative and fit NumPy's 32-bit seeding."""

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_MAX = 64


def _check_safe_name(value: str) -> str:
    if len(value) > NAME_MAX or not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise ValueError(f"{value[:80]!r} becomes a file or folder name: expected up to "
                         f"{NAME_MAX} letters, digits, '.', '_' or '-', starting with a letter or "
                         "digit, without '..'")
    return value


SafeName = Annotated[str, AfterValidator(_check_safe_name)]
"""A config name that becomes part of a path in the run (the run's ``name``, a method's, a
step's): plain characters only, so that it can never lead outside the run folder."""


def _check_path_part(value: str) -> str:
    bad = (not value or len(value) > 2 * NAME_MAX or value.startswith(".")
           or any(c in value for c in "/\\\0") or any(ord(c) < 32 for c in value))
    if bad:
        raise ValueError(f"{value[:80]!r} becomes part of a file name: expected at most "
                         f"{2 * NAME_MAX} characters, no '/', '\\' or control characters, "
                         "not starting with '.'")
    return value


PathPart = Annotated[str, AfterValidator(_check_path_part)]
"""A looser :data:`SafeName` for names from the data (drug names such as ``Nutlin-3a (-)``)
that also end up in file names: anything but path separators, control characters and a
leading dot."""


def _path_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, os.PathLike) else value


ConfigPath = Annotated[str, BeforeValidator(_path_as_text), AfterValidator(_resolve_against_base)]
"""A path in a config: relative to the config file's folder, absolute once validated with the
``base_dir`` context (:func:`validate_config` passes it), so jobs and ``--resume`` read the same
files from any working directory and the run records where they were."""


def resolve_config_paths(config: ConfigT, base_dir: str | Path) -> ConfigT:
    """The same config with every :data:`ConfigPath` made absolute against ``base_dir``."""
    return type(config).model_validate(config.model_dump(), context={"base_dir": Path(base_dir)})


def format_validation_error(exc: ValidationError, source: str | Path,
                            overrides: Sequence[str] = ()) -> GliotlError:
    """Turn pydantic's multi-line report into one line naming the key and what was expected
    (and the ``--set`` that gave the key, when one did)."""
    # An unknown key is usually a typo of a key reported as missing: name the typo first.
    errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
    err = errors[0]
    key = ".".join(str(part) for part in err.get("loc", ())) or "<root>"
    if err.get("type") == "extra_forbidden":
        expected = "unknown config key"
    else:
        expected = err.get("msg", "invalid value")
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    given = override_for(key, overrides)
    if given is not None:
        return GliotlError(f"--set {given}: field '{key}': {expected}{more} (config {source})")
    return input_error(source, key, expected + more)


def validate_config(model: type[ConfigT], data: dict[str, Any], source: str | Path,
                    base_dir: str | Path | None = None, overrides: Sequence[str] = ()
                    ) -> ConfigT:
    """Validate ``data`` read from ``source`` after applying the ``--set`` ``overrides``;
    :data:`ConfigPath` fields resolve against ``base_dir`` (default: the folder of
    ``source``)."""
    base = Path(base_dir) if base_dir is not None else Path(source).resolve().parent
    data = apply_overrides(data, overrides) if overrides else data
    try:
        return model.model_validate(data, context={"base_dir": base})
    except ValidationError as exc:
        raise format_validation_error(exc, source, overrides) from None


MAX_YAML_NODES = 100_000
"""The most YAML nodes a config may hold once its aliases are expanded: real configs hold a few
hundred; an alias bomb (``a: &a [x, x, ...]``, ``b: [*a, *a, ...]``, ...) billions."""


class _YamlRefused(yaml.YAMLError):
    """A YAML document that parses but is refused (duplicate key, too many aliases)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes in ``node`` with every alias expanded (memoised: a bomb is measured, not built)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise _YamlRefused(f"recursive alias at line {node.start_mark.line + 1}")
    open_nodes.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes, open_nodes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes, open_nodes) + _expanded_size(v, sizes, open_nodes)
                    for k, v in node.value)
    open_nodes.discard(key)
    sizes[key] = size
    if size > MAX_YAML_NODES:
        raise _YamlRefused(f"aliases at line {node.start_mark.line + 1} expand to more than "
                           f"{MAX_YAML_NODES:,} values; write the values out")
    return size


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key; SafeLoader reports it
                continue
            if first is not None:
                raise _YamlRefused(f"key '{key}' given twice (lines {first} and {line}); "
                                   "keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str) -> Any:
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise input_error(path, None, f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                          f"offset {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise input_error(path, None, f"cannot be read ({exc.strerror})") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping read strictly: UTF-8, no key given twice, aliases within a small limit;
    every failure is one line naming the file (and the line where known)."""
    path = Path(path)
    if path.is_dir():
        raise input_error(path, None, "is a folder; expected a YAML config file")
    if not path.is_file():
        raise input_error(path, None, "config file not found")
    try:
        data = _parse_yaml(_read_text(path))
    except _YamlRefused as exc:
        raise input_error(path, None, exc.message) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise input_error(path, None, f"invalid YAML{where}") from None
    except RecursionError:
        raise input_error(path, None, "YAML nested too deeply") from None
    if data is None:
        raise input_error(path, None, "config file is empty")
    if not isinstance(data, dict):
        raise input_error(path, None, "expected a mapping of config keys at the top level")
    return data


def load_config(model: type[ConfigT], path: str | Path,
                overrides: Sequence[str] = ()) -> ConfigT:
    """Load and validate a YAML config (``--set`` ``overrides`` applied first); its
    :data:`ConfigPath` fields resolve against its folder."""
    return validate_config(model, load_yaml(path), path, overrides=overrides)


def config_to_dict(config: BaseModel) -> dict[str, Any]:
    """The resolved config as plain YAML-able data (defaults filled in)."""
    return config.model_dump(mode="json")
