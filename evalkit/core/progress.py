"""What a run tells the outside world while it works. The library calls these hooks and prints nothing;
the CLI passes a reporter that draws progress bars (`cli.display.RichReporter`); a notebook may pass its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evalkit.core.types import Completion

if TYPE_CHECKING:  # the hooks name this type; nothing here needs the records at run time
    from evalkit.store.records import Transcript


class Reporter:
    """Every hook does nothing by default."""

    def warn(self, message: str) -> None: ...

    def note(self, message: str) -> None: ...

    def sessions(self, total: int, done: int) -> None:
        """Simulation starts: `done` of `total` sessions already exist (resumed)."""

    def turn_done(self, completion: Completion) -> None: ...

    def session_done(self, transcript: Transcript) -> None: ...

    def scoring(self, total: int, done: int) -> None:
        """Scoring starts: `done` of `total` expected score rows already exist."""

    def rows_scored(self, n: int) -> None: ...

    def close(self) -> None: ...
