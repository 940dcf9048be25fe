"""The `advisor` command: parse, call one pure function, render. Errors are one line and exit code 2.

One Typer app per command family, joined here: recommend, advise (review, estimate), scaling, catalogs, runs
(validate, run, compare, calibrate).
"""

import os
import sys

import typer

from advisor.core.errors import AdvisorError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Rightsize: decide how to adapt a language model, with numbers, then run it.")
scaling_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Scaling laws: optimal size, loss, repeated data, inference.")
catalog_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="List the GPU, model and API catalogs.")
app.add_typer(scaling_app, name="scaling")
app.add_typer(catalog_app, name="catalog")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every user error becomes one line on stderr and exit code 2, never a traceback."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="advisor", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except AdvisorError as exc:
        code = _fail(str(exc))
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0)) or 0
    except typer.Abort:
        code = _fail("aborted", 130)
    except KeyboardInterrupt:
        code = _fail("interrupted", 130)
    except OSError as exc:  # the machine, not the input: a full disk, a vanished directory
        code = _fail(f"{exc.strerror or exc}{': ' + str(exc.filename) if getattr(exc, 'filename', None) else ''}", 1)
    except Exception as exc:  # noqa: BLE001 - the edge of the program: one line, not a traceback
        format_message = getattr(exc, "format_message", None)
        if format_message is not None:  # click-style usage errors (click or typer's vendored copy)
            if type(exc).__name__ == "NoArgsIsHelpError":
                typer.echo(format_message())
                code = 0
            else:
                code = _fail(format_message().replace("\n", " "), getattr(exc, "exit_code", 2) or 2)
        elif os.environ.get("RIGHTSIZE_DEBUG"):
            raise
        else:
            code = _fail(f"internal error: {type(exc).__name__}: {exc} (set RIGHTSIZE_DEBUG=1 for the traceback)", 1)
    if argv is None:
        sys.exit(code)
    return code


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"advisor: error: {message}\n")
    return code
