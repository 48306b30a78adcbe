"""Run the ``gliotl`` command line in this process, the way the console script does."""

from __future__ import annotations

from gliotl.cli import main


def run_gliotl(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``gliotl argv`` (``main`` returns on success and exits
    on failure)."""
    capsys.readouterr()
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err
