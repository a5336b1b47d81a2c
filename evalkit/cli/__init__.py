"""The `evalkit` command: option parsing and printing over the library (`app.py` the commands, `display.py` the
tables and progress)."""

from evalkit.cli.app import app, main

__all__ = ["app", "main"]
