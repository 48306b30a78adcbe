"""User-facing errors.

A :class:`GliotlError` is a mistake the user can fix (a bad file, a wrong config key, a missing
column). The CLI prints it as one line and exits with status 2; it is never shown as a traceback.
"""

from __future__ import annotations

from pathlib import Path


class GliotlError(Exception):
    """An error caused by user input; its message is a single self-contained line."""

    exit_code = 2


def input_error(source: str | Path, field: str | None, expected: str) -> GliotlError:
    """Build the standard one-line message: which file, which field, what was expected."""
    where = str(source)
    if field:
        where += f": field '{field}'"
    return GliotlError(f"{where}: {expected}")
