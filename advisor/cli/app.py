"""The `advisor` command: parse, call one pure function, render. Errors are one line and exit code 2.

One Typer app per command family, joined here: recommend, advise (review, estimate), scaling, catalogs, runs
(validate, run, compare, calibrate), evaluate (eval), launch (launch).
"""

import json
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
    """Run the CLI; every user error becomes one line on stderr and exit code 2, never a traceback (under --json, a
    JSON object on stdout instead: `{"error": ..., "flag": ...}`, so a script reading the output can parse it)."""
    command = typer.main.get_command(app)
    failure: tuple[str, int, str | None] | None = None  # the message, the exit code and the flag to blame, if any
    try:
        result = command.main(args=argv, prog_name="advisor", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except AdvisorError as exc:
        failure = (str(exc), 2, exc.flag)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0)) or 0
    except typer.Abort:
        failure = ("aborted", 130, None)
    except KeyboardInterrupt:
        failure = ("interrupted", 130, None)
    except OSError as exc:  # the machine, not the input: a full disk, a vanished directory
        failure = (f"{exc.strerror or exc}{': ' + str(exc.filename) if getattr(exc, 'filename', None) else ''}", 1, None)
    except Exception as exc:  # noqa: BLE001 - the edge of the program: one line, not a traceback
        format_message = getattr(exc, "format_message", None)
        if format_message is not None:  # click-style usage errors (click or typer's vendored copy)
            if type(exc).__name__ == "NoArgsIsHelpError":
                typer.echo(format_message())
                code = 0
            else:
                failure = (format_message().replace("\n", " "), getattr(exc, "exit_code", 2) or 2, _flag_of(exc))
        elif os.environ.get("RIGHTSIZE_DEBUG"):
            raise
        else:
            failure = (f"internal error: {type(exc).__name__}: {exc} (set RIGHTSIZE_DEBUG=1 for the traceback)", 1, None)
    if failure is not None:
        code = _fail(*failure, as_json=_wants_json(sys.argv[1:] if argv is None else argv))
    if argv is None:
        sys.exit(code)
    return code


def _wants_json(args: list[str]) -> bool:
    """Whether the command line asked for --json (before a `--` that ends the options): its errors are JSON too."""
    args = [str(a) for a in args]
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def _flag_of(exc: Exception) -> str | None:
    """The flag a click usage error is about (a bad value's option, an unknown option), where it names one."""
    opts = getattr(getattr(exc, "param", None), "opts", None) or [getattr(exc, "option_name", None)]
    return next((o for o in opts if isinstance(o, str) and o.startswith("-")), None)


def _fail(message: str, code: int = 2, flag: str | None = None, as_json: bool = False) -> int:
    if as_json:
        sys.stdout.write(json.dumps({"error": message} | ({"flag": flag} if flag else {})) + "\n")
    else:
        sys.stderr.write(f"advisor: error: {message}\n")
    return code
