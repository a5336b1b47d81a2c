"""Terminal output: live progress for sessions, turns and judging, and the summary table."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .backends.base import Completion
from .records import Summary, Transcript
from .simulation.engine import Progress as EngineProgress

console = Console(stderr=True)


class RunProgress(EngineProgress):
    """Rich progress bars; the engine and judge report into it."""

    def __init__(self, *, sessions: int, judge_items: int, enabled: bool = True):
        self._bar = Progress(TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                             console=console, disable=not enabled, transient=False)
        self._sessions = self._bar.add_task("sessions", total=sessions, rate="")
        self._turns = self._bar.add_task("turns", total=None, rate="")
        self._judging = self._bar.add_task("judging", total=judge_items, rate="", start=False)
        self._adherence: int | None = None
        self._tokens = 0
        self._started = time.perf_counter()

    def __enter__(self) -> RunProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def turn_done(self, completion: Completion) -> None:
        self._tokens += completion.completion_tokens or 0
        rate = self._tokens / max(time.perf_counter() - self._started, 1e-6)
        self._bar.update(self._turns, advance=1, rate=f"{rate:,.0f} tok/s")

    def session_done(self, transcript: Transcript) -> None:
        self._bar.update(self._sessions, advance=1)

    def skip_sessions(self, n: int) -> None:
        self._bar.update(self._sessions, advance=n, rate=f"{n} resumed" if n else "")

    def start_judging(self, already: int) -> None:
        self._bar.start_task(self._judging)
        self._judge_started, self._judged = time.perf_counter(), 0
        self._bar.update(self._judging, advance=already, rate=f"{already} resumed" if already else "")

    def items_judged(self, n: int) -> None:
        self._judged += n
        rate = self._judged / max(time.perf_counter() - self._judge_started, 1e-6)
        self._bar.update(self._judging, advance=n, rate=f"{rate:,.1f} items/s")


    def start_adherence(self, sessions: int, already: int) -> None:
        self._adherence = self._bar.add_task("adherence", total=sessions, rate="persona checks")
        self._bar.update(self._adherence, advance=already)

    def adherence_done(self) -> None:
        self._bar.update(self._adherence, advance=1)  # type: ignore[arg-type]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def print_summary(summary: Summary, names: dict[str, dict[str, str]]) -> None:
    """One table per rubric: composites first, then items; then persona adherence."""
    for rubric_id, rs in summary.rubrics.items():
        table = Table(title=f"{rubric_id} · {summary.sessions} sessions · mean and 95% CI clustered by persona",
                      title_justify="left")
        for column, justify in [("score", "left"), ("range", "right"), ("mean", "right"), ("95% CI", "right"),
                                ("n", "right"), ("invalid", "right")]:
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for kind, stats in (("composite", rs.composites), ("item", rs.items)):
            for key, stat in stats.items():
                ci = "—" if stat.ci_low is None else f"[{stat.ci_low:.2f}, {stat.ci_high:.2f}]"
                label = names[rubric_id].get(key, key)
                style = "bold" if kind == "composite" else None
                invalid = f"[red]{stat.n_invalid}[/red]" if stat.n_invalid else "0"
                table.add_row(label, f"{stat.range[0]:g}–{stat.range[1]:g}", _fmt(stat.mean), ci, str(stat.n), invalid,
                              style=style)
            table.add_section()
        console.print(table)
        critical = rs.critical_failures
        if critical and critical.share is not None:
            style = "bold red" if critical.with_failure else "bold green"
            console.print(f"[{style}]critical failures: {critical.with_failure} of {critical.sessions} sessions "
                          f"({critical.share:.0%}, 95% CI {critical.ci_low:.0%}–{critical.ci_high:.0%})[/{style}]"
                          + (f"; {critical.n_invalid} sessions could not be assessed" if critical.n_invalid else ""))
    adherence = summary.adherence
    if adherence and adherence.overall is not None:
        worst = sorted(adherence.per_persona.items(), key=lambda kv: kv[1])[:3]
        console.print(f"persona adherence: {adherence.overall:.0%} overall over {adherence.sessions_checked} sessions; "
                      f"{len(adherence.flagged)} flagged below {adherence.threshold:.0%}; lowest: "
                      + ", ".join(f"{escape(p)} {r:.0%}" for p, r in worst), soft_wrap=True)

