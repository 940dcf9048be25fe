"""The `advisor` command (entry point `advisor.cli:main`); each family of commands in its own module.

A command's module is imported only when that command runs (`COMMAND_MODULES`), so `advisor recommend` does not
pay for the run, scaling and catalog commands' imports; `--help`, an unknown name and `advisor.cli.app` register all.
"""

import gc
import importlib
import sys

# the command (first word after `advisor`) -> the module in advisor.cli that registers it on the app;
# tests/advisor/test_cli.py checks this against the commands the full app registers, so it cannot drift
COMMAND_MODULES = {
    "recommend": "recommend", "review": "advise", "estimate": "advise",
    "validate": "runs", "prepare": "runs", "run": "runs", "compare": "runs", "calibrate": "runs", "generate": "runs", "chat": "runs",
    "eval": "evaluate", "launch": "launch",
    "scaling": "scaling", "catalog": "catalogs",
}
_ALL_MODULES = tuple(dict.fromkeys(COMMAND_MODULES.values()))
# Commands that compute and print, then exit: their process runs without the cyclic garbage collector and freezes
# what it holds before exiting, so neither the imports nor interpreter shutdown walk every object (measured by
# bench/advisor_latency.py: about 30 ms of `advisor recommend`'s 180 ms). `run`, `generate` and `chat` train or load
# models for minutes and keep the collector.
SHORT_LIVED_MODULES = frozenset({"recommend", "advise", "scaling", "catalogs"})


def register(modules=_ALL_MODULES):
    """Import the command modules named (each registers its commands on `app` once) and return the app."""
    for name in modules:
        importlib.import_module(f"advisor.cli.{name}")
    from advisor.cli.app import app
    # importing the submodule advisor.cli.app bound this package's `app` to that module; `advisor.cli.app` as an
    # attribute means the Typer app with every command (module __getattr__ below registers them on first use)
    if set(modules) >= set(_ALL_MODULES):
        globals()["app"] = app
    else:
        globals().pop("app", None)
    return app


def _modules_for(argv: list[str]) -> tuple[str, ...]:
    """The command modules an invocation needs: the named command's alone, else (help, a typo) all of them."""
    words = [a for a in argv if not a.startswith("-")]
    module = COMMAND_MODULES.get(words[0]) if words else None
    return (module,) if module else _ALL_MODULES


def main(argv: list[str] | None = None) -> int:
    """Run the CLI (see advisor.cli.app.main), importing only the invoked command's module. As the process's
    entry point (`argv` None) a short-lived command runs without the cyclic collector; called in-process (tests)
    the caller's collector is left alone."""
    modules = _modules_for(sys.argv[1:] if argv is None else argv)
    short_lived = argv is None and SHORT_LIVED_MODULES.issuperset(modules)
    if short_lived:
        gc.disable()
    try:
        register(modules)
        from advisor.cli.app import main as run_app
        return run_app(argv)
    finally:
        if short_lived:
            gc.freeze()  # the exit that follows then skips collecting everything this process made


def __getattr__(name: str):
    if name == "app":  # `from advisor.cli import app` (tests, CliRunner): the app with every command
        return register()
    raise AttributeError(f"module 'advisor.cli' has no attribute {name!r}")


__all__ = ["COMMAND_MODULES", "app", "main", "register"]
