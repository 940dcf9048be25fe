"""The `advisor` command (entry point `advisor.cli:main`); each family of commands in its own module."""

from advisor.cli.app import app, main
from advisor.cli import advise, catalogs, runs, scaling  # noqa: F401,E402 - registers their commands on `app`

__all__ = ["app", "main"]
