"""``--set key=value``: change one config value from the command line without editing the file.

Keys are dotted paths into the YAML (``train.finetune.epochs``; a number indexes a list:
``methods.0.name``); values are read as YAML (``5`` is an int, ``[a, b]`` a list, ``null``
None). Overrides are applied to the file's data before validation, so a bad key or value is
refused like one written in the file, but named as the ``--set`` that gave it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from gliotl.errors import GliotlError


@dataclass(frozen=True)
class Override:
    """One ``--set``: its dotted key, parsed into parts, and its YAML-typed value."""

    text: str
    parts: tuple[str, ...]
    value: Any

    @property
    def key(self) -> str:
        return ".".join(self.parts)


def parse_override(text: str) -> Override:
    """``key=value`` with a dotted key; the value is YAML (``--set seed=3`` gives the int 3)."""
    key, sep, raw = text.partition("=")
    parts = tuple(part.strip() for part in key.split("."))
    if not sep or not all(parts):
        raise GliotlError(f"--set: expected key=value with a dotted key such as "
                          f"train.finetune.epochs=5, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise GliotlError(f"--set {key}: the value '{raw}' is not valid YAML") from None
    return Override(text, parts, value)


def _child(node: Any, part: str, override: Override) -> Any:
    """The container under ``node`` at ``part``, created as a mapping when missing."""
    if isinstance(node, dict):
        if not isinstance(node.get(part), (dict, list)):
            if part in node and node[part] is not None:
                raise GliotlError(f"--set {override.key}: '{part}' holds a single value, not "
                                  "a mapping of keys")
            node[part] = {}
        return node[part]
    return node[_index(node, part, override)]


def _index(node: list, part: str, override: Override) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise GliotlError(f"--set {override.key}: '{part}' must index the list there (0 to "
                          f"{len(node) - 1})")
    return int(part)


def apply_override(data: dict[str, Any], override: Override) -> None:
    """Set one value in ``data`` (in place), making the mappings on its path as needed."""
    node: Any = data
    for part in override.parts[:-1]:
        node = _child(node, part, override)
        if not isinstance(node, (dict, list)):
            raise GliotlError(f"--set {override.key}: '{part}' holds a single value, not a "
                              "mapping of keys")
    last = override.parts[-1]
    if isinstance(node, list):
        node[_index(node, last, override)] = override.value
    else:
        node[last] = override.value


def apply_overrides(data: dict[str, Any], texts: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with every ``--set`` applied in order (a later one wins)."""
    result = copy.deepcopy(data)
    for text in texts:
        apply_override(result, parse_override(text))
    return result


def override_for(error_key: str, texts: Sequence[str]) -> str | None:
    """The ``--set`` key a validation error at ``error_key`` came from, if any (the last one
    on that path, as it is the one that took effect)."""
    for text in reversed(texts):
        key = parse_override(text).key
        if error_key == key or error_key.startswith(key + ".") or key.startswith(error_key + "."):
            return key
    return None


__all__ = ["Override", "apply_override", "apply_overrides", "override_for", "parse_override"]
