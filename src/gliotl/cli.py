"""The ``gliotl`` command: a thin Typer layer over the Python API.

Sub-commands live next to the code they drive (``gliotl.drug.data.cli``, ``gliotl.drug.cli``,
``gliotl.mgmt.cli``); heavy imports (torch, MONAI) happen inside commands so ``--help`` is fast.
User mistakes print one line on stderr and exit with status 2, never a traceback: a
:class:`gliotl.errors.GliotlError`, a command-line usage error (a bad option value, a missing
argument) and an operating-system error (disk full, permission denied) the user can fix.
"""

from __future__ import annotations

import sys

import typer

from gliotl import __version__
from gliotl.errors import GliotlError

app = typer.Typer(
    name="gliotl",
    help="Transfer learning for small glioblastoma datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gliotl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    """Transfer learning for small glioblastoma datasets."""


def _register() -> None:
    from gliotl.drug.cli import drug_app
    from gliotl.drug.data.cli import data_app
    from gliotl.mgmt.cli import mgmt_app

    app.add_typer(data_app, name="data")
    app.add_typer(drug_app, name="drug")
    app.add_typer(mgmt_app, name="mgmt")
    try:
        from gliotl.demo import demo_command
    except ImportError:
        return
    app.command("demo")(demo_command)


_register()


def _error(message: str, code: int = 2) -> None:
    """Print ``message`` as one line on stderr and exit with ``code``."""
    typer.secho("error: " + " ".join(message.split()), err=True, fg="red")
    sys.exit(code)


def _usage_message(exc: typer.TyperException) -> str:
    ctx = getattr(exc, "ctx", None)
    prefix = f"{ctx.command_path}: " if ctx is not None else ""
    return prefix + exc.format_message()


def _os_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}; check the path, its permissions and free space"


def main(argv: list[str] | None = None) -> None:
    """Run the command line (``argv``: the arguments, default ``sys.argv[1:]``)."""
    try:
        code = app(args=argv, prog_name="gliotl", standalone_mode=False)
    except typer.TyperException as exc:  # typer's own click: a usage error, or bare-group help
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined]  # a click UsageError subclass
            sys.exit(exc.exit_code)
        _error(_usage_message(exc), getattr(exc, "exit_code", 2))
    except typer.Abort:
        _error("interrupted", 130)
    except GliotlError as exc:
        _error(str(exc), exc.exit_code)
    except OSError as exc:
        _error(_os_message(exc))
    if isinstance(code, int) and code:
        if code == 130:
            _error("interrupted; a run stopped here continues with --resume", 130)
        sys.exit(code)
