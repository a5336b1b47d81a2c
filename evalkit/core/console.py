"""The terminal: tables and listings on stdout, progress and warnings on stderr, and no secret ever printed.

Imports nothing from evalkit but `secrets`.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

from rich.console import Console
from rich.markup import escape

from evalkit.core.secrets import scrub


class _Scrubbed:
    """A text stream that removes known API keys from everything written through it."""

    def __init__(self, target: TextIO | None = None, stream: str = "stderr"):
        self.target = target
        self.stream = stream

    @property
    def _out(self) -> TextIO:
        return self.target or getattr(sys, self.stream)  # looked up on each write, so tests that swap the stream see it

    def write(self, text: str) -> int:
        return self._out.write(scrub(text))

    def flush(self) -> None:
        self._out.flush()

    def isatty(self) -> bool:
        return self._out.isatty()

    def fileno(self) -> int:
        return self._out.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._out, "encoding", "utf-8")


console = Console(file=_Scrubbed())  # type: ignore[arg-type]
"""Progress, warnings and messages: stderr."""
out_console = Console(file=_Scrubbed(stream="stdout"))  # type: ignore[arg-type]
"""Tables and listings, what a user pipes into grep: stdout."""


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from outside (a server's model id, an error body) made safe to print: control characters, escape
    sequences included, shown as \\xNN instead of being obeyed by the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def warn(message: str) -> None:
    console.print(f"[bold yellow]warning:[/bold yellow] {escape(printable(message))}", soft_wrap=True)

