"""The `evalkit` command: a thin typer skin over the Python API.

Each command builds the library's typed inputs from its flags, calls one library function, and prints.
Bad input or environment (`EvalkitError`, or a usage error) prints one line and exits 2, naming the flag
where the library named a field; SIGTERM and Ctrl-C stop cleanly with exit 130. The commands live by what they
do: `run.py` (run, rescore, demo, track), `analyse.py` (compare, gate, plan, report), `content.py` (suites,
personas, import, lm-eval-path), `judge.py` (judge ...).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from typing import Annotated

import typer
from rich.markup import escape

from evalkit.cli import analyse, content, judge, run
from evalkit.cli.common import flagged
from evalkit.core.console import console, printable
from evalkit.core.errors import EvalkitError

app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]}, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Clinical-fidelity evaluation of counselling language models.")


def _version(value: bool) -> None:
    if value:
        from evalkit.core.version import __version__

        print(f"evalkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Clinical-fidelity evaluation of counselling language models."""


app.command("run")(run.run_command)
app.command()(run.rescore)
app.command()(analyse.compare)
app.command("gate")(analyse.gate_command)
app.command()(analyse.plan)
app.command()(analyse.report)
app.command()(run.track)
app.command()(run.runs)
app.command()(run.demo)
app.command()(content.suites)
app.command()(content.personas)
app.command("lm-eval-path")(content.lm_eval_path)
app.add_typer(judge.judge_app, name="judge")
app.add_typer(content.import_app, name="import")
app.add_typer(content.models_app, name="models")


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM outside the event loop (e.g. while the report is written) stops like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line and exit code 2 for bad input; 130 when interrupted (Ctrl-C or SIGTERM, at any point:
    while a run works, or while its report is written afterwards)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    try:
        result = app(args=argv, standalone_mode=False, prog_name="evalkit")
    except (KeyboardInterrupt, typer.Abort, asyncio.CancelledError):
        result = 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors; typer vendors click's exceptions under this base
        if not exc.format_message():  # bare `evalkit`: the help was printed, nothing went wrong
            return 0
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx else ""
        console.print(f"[bold red]error:[/bold red] {escape(exc.format_message())}{hint}", soft_wrap=True)
        return 2
    except EvalkitError as exc:  # one line, whatever a server put in the message (newlines, escape sequences)
        console.print(f"[bold red]error:[/bold red] {escape(' '.join(printable(flagged(str(exc))).split()))}", soft_wrap=True)
        return 2
    if result == 130:
        console.print("[bold red]interrupted[/bold red]: finished work is kept; run the same command again to continue")
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
