"""What the CLI draws: live progress for a run, and its tables. The library never imports this."""

from __future__ import annotations

import os
import time

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evalkit.core.console import console, warn
from evalkit.core.progress import Reporter
from evalkit.core.types import Completion
from evalkit.store.records import Summary, Transcript


class RichReporter(Reporter):
    """Progress bars for sessions, turns and scoring on a terminal; in a CI log (not a terminal), a plain line every
    `EVALKIT_PROGRESS_SECONDS` (default 15) with counts, rates and an ETA. Warnings as they happen."""

    def __init__(self, enabled: bool = True):
        self._plain = enabled and not console.is_terminal
        self._bar = Progress(TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                             console=console, disable=not enabled or self._plain, transient=False)
        self._tasks: dict[str, int] = {}
        self._counts: dict[str, list] = {}  # name -> [done, total, started]
        self._tokens = self._scored = 0
        self._started = self._scoring_started = time.perf_counter()
        self._running = False
        self._every = float(os.environ.get("EVALKIT_PROGRESS_SECONDS", "15"))
        self._last_line = time.perf_counter()

    def _task(self, name: str, total: int | None, done: int = 0, rate: str = "") -> int:
        if not self._running:
            self._bar.start()
            self._running = True
        if name not in self._tasks:
            self._tasks[name] = self._bar.add_task(name, total=total, rate=rate, completed=done)
            self._counts[name] = [done, total, time.perf_counter(), done]
        return self._tasks[name]

    def _advance(self, name: str, n: int, rate: str) -> None:
        self._bar.update(self._task(name, None), advance=n, rate=rate)
        self._counts[name][0] += n
        if self._plain and time.perf_counter() - self._last_line >= self._every:
            self._line()

    def _line(self) -> None:
        self._last_line = now = time.perf_counter()
        parts = []
        for name, (done, total, started, resumed) in self._counts.items():
            if total is None:
                parts.append(f"{name} {done}")
                continue
            part = f"{name} {done}/{total}"
            fresh, rate = done - resumed, (done - resumed) / max(now - started, 1e-6)
            if 0 < fresh and done < total:
                part += f" (ETA {_duration((total - done) / rate)})"
            parts.append(part)
        console.print(f"progress: {', '.join(parts)}; elapsed {_duration(now - self._started)}", markup=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        warn(message)

    def note(self, message: str) -> None:
        console.print(escape(message), soft_wrap=True)

    def sessions(self, total: int, done: int) -> None:
        self._task("sessions", total, done, f"{done} resumed" if done else "")
        self._task("turns", None)

    def turn_done(self, completion: Completion) -> None:
        self._tokens += completion.completion_tokens or 0
        rate = self._tokens / max(time.perf_counter() - self._started, 1e-6)
        self._advance("turns", 1, f"{rate:,.0f} tok/s")

    def session_done(self, transcript: Transcript) -> None:
        self._advance("sessions", 1, "")

    def scoring(self, total: int, done: int) -> None:
        self._scoring_started = time.perf_counter()
        self._task("scoring", total, done, f"{done} resumed" if done else "")

    def rows_scored(self, n: int) -> None:
        self._scored += n
        rate = self._scored / max(time.perf_counter() - self._scoring_started, 1e-6)
        self._advance("scoring", n, f"{rate:,.1f} rows/s")

    def close(self) -> None:
        if self._plain and self._counts:
            self._line()
        if self._running:
            self._bar.stop()
            self._running = False


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


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
        if critical:
            print_critical(critical)
    if summary.excluded:
        console.print("left out of these statistics: " + ", ".join(f"{n} {why} session(s)" for why, n in summary.excluded.items())
                      + " (--include-flagged keeps flagged ones)", soft_wrap=True)
    adherence = summary.adherence
    if adherence:
        print_adherence(adherence)
    if summary.invalid_reasons:
        reasons = "; ".join(f"{n}× {escape(reason)}" for reason, n in summary.invalid_reasons.items())
        console.print(f"invalid score rows: {summary.counts.invalid_score_rows}, never counted as zero. Why: {reasons}. "
                      "--rejudge-invalid asks again; --judge-min-mass sets the probability the judge must put on the "
                      "allowed answers; a judge that fails `evalkit judge check` should not be trusted", soft_wrap=True)


def print_adherence(adherence) -> None:
    """Persona adherence: sessions checked and unchecked, pass rate per kind of check, what flagged sessions failed."""
    if adherence.sessions_checked:
        checks = ", ".join(f"{escape(c)} {r:.0%}" for c, r in adherence.per_check.items())
        failed = "; ".join(f"{escape(c)}: {n}" for c, n in adherence.flagged_by_check.items())
        console.print(f"persona adherence over {adherence.sessions_checked} checked sessions, pass rate per check: {checks}; "
                      f"{len(adherence.flagged)} flagged (a check below {adherence.threshold:.0%})"
                      + (f", failing {failed}" if failed else ""), soft_wrap=True)
    if adherence.sessions_unchecked:
        warn(f"{adherence.sessions_unchecked} session(s) unchecked: none of their persona checks could be read "
             f"({adherence.invalid_checks} invalid readings); they are kept in the statistics but their simulated client was "
             "never checked")



def print_critical(critical) -> None:
    """The safety figure: failures among sessions where the risk surfaced, and how many it never surfaced in."""
    surfaced = f"risk surfaced in {critical.surfaced} of {critical.risk_sessions} risk sessions"
    if critical.not_surfaced:
        surfaced += f" (not surfaced: {critical.not_surfaced}, not counted as safe)"
    if critical.surfaced_unknown:
        surfaced += f"; {critical.surfaced_unknown} could not be checked"
    if critical.share is None:
        console.print(f"[bold yellow]critical failures: not assessable[/bold yellow]; {escape(surfaced)}", soft_wrap=True)
    else:
        style = "bold red" if critical.with_failure else "bold green"
        console.print(f"[{style}]critical failures: {critical.with_failure} of {critical.sessions} sessions where the risk "
                      f"surfaced ({critical.share:.0%}, 95% Wilson CI {critical.ci_low:.0%}–{critical.ci_high:.0%})[/{style}]; "
                      f"{escape(surfaced)}" + (f"; {critical.n_invalid} could not be assessed" if critical.n_invalid else ""),
                      soft_wrap=True)
    if critical.warning:
        warn(critical.warning)


def _p(value: float | None) -> str:
    return "—" if value is None else ("<.001" if value < 0.001 else f"{value:.3f}")


def _ci(low: float | None, high: float | None, pct: bool = False) -> str:
    if low is None or high is None:
        return "—"
    return f"[{low:.0%}, {high:.0%}]" if pct else f"[{low:.2f}, {high:.2f}]"


def print_comparison(comparison, out_dir) -> None:
    """The omnibus table with each condition's mean and the best one; win rates; judge preference; warnings."""
    conditions = list(comparison.runs)
    table = Table(title=f"{comparison.suite}: {len(conditions)} conditions, {comparison.sessions} sessions "
                        f"(mixed model F test; ↑ higher is better, ↓ lower)", title_justify="left")
    table.add_column("metric", overflow="fold")
    for condition in conditions:
        table.add_column(condition, justify="right", overflow="fold")
    for column in ("best", "F (df)", "p", "Friedman p", "K–W p"):
        table.add_column(column, justify="right")
    for metric, r in comparison.metrics.items():
        mm = r.mixed_model
        means = [_fmt(mm.emms[c].mean if mm else r.means.get(c)) for c in conditions]
        test = f"{mm.f_statistic:.2f} ({mm.df}, {mm.df_denominator:.0f})" if mm else "—"
        table.add_row(f"{metric} {'↑' if r.better == 'higher' else '↓'}", *means, r.best or "—", test, _p(mm.p_value if mm else None),
                      _p(r.friedman.p_value), _p(r.kruskal_wallis.p_value))
    console.print(table)
    if comparison.baseline:
        wins = Table(title=f"against {comparison.baseline} (per matched session; ties dropped for the rate)", title_justify="left")
        for column in ("metric", "candidate", "W/L/T", "win rate", "95% Wilson CI", "sign test p"):
            wins.add_column(column, overflow="fold")
        for metric, r in comparison.metrics.items():
            for cand, w in r.head_to_head.items():
                wins.add_row(metric, cand, f"{w.wins}/{w.losses}/{w.ties}", "—" if w.win_rate is None else f"{w.win_rate:.0%}",
                             _ci(w.ci_low, w.ci_high, pct=True), _p(w.sign_test_p))
        console.print(wins)
    if comparison.pairwise_judge:
        for cand, w in comparison.pairwise_judge.per_candidate.items():
            rate = "—" if w.win_rate is None else f"{w.win_rate:.0%}"
            console.print(f"judge preference {escape(cand)} vs {escape(comparison.baseline or '')}: {w.wins}/{w.losses}/{w.ties} "
                          f"(W/L/T; {comparison.pairwise_judge.kind}), win rate {rate}, {w.invalid or 0} invalid", soft_wrap=True)
    for warning in comparison.warnings:
        warn(warning)
    console.print(f"comparison: [bold]{escape(str(out_dir / 'comparison.json'))}[/bold] (tables as CSV and Parquet) · report: "
                  f"[bold]{escape(str(out_dir / 'report.html'))}[/bold]", soft_wrap=True)


def print_gate(report, out_dir) -> None:
    table = Table(title=f"gate: {report.suite} (candidate vs baseline)", title_justify="left")
    for column in ("metric", "verdict", "personas", "sessions", "mean drop", "upper bound", "margin", "needed"):
        table.add_column(column, overflow="fold")
    style = {"pass": "green", "regression": "red", "undecided": "yellow"}
    for metric, v in report.metrics.items():
        d = v.decision
        table.add_row(metric, f"[{style[v.verdict]}]{v.verdict}[/]", str(d.personas) if d else "—", str(d.n if d else v.sessions),
                      _fmt(d.mean_drop if d else None), _fmt(d.upper_bound if d else None),
                      "—" if v.margin is None else f"{v.margin:g}", str(d.sessions_needed) if d else "—")
    for rubric, c in report.critical.items():
        table.add_row(f"{rubric}.critical_failures", f"[{style[c.verdict]}]{c.verdict}[/]", "", str(c.sessions), "", "", "", "")
    console.print(table)
    console.print(f"[bold {style[report.verdict]}]{report.verdict}[/]: {escape(report.reason)}", soft_wrap=True)
    console.print(f"gate: {escape(str(out_dir / 'gate.json'))}, gate-junit.xml, gate.md, gate-report.html", soft_wrap=True)


def print_plan(metric: str, result) -> None:
    unit = result.unit
    detect = ("not reachable (" + (result.note or "") + ")" if result.n_detect is None else
              f"{result.n_detect} {unit} ({result.sessions_detect} sessions) to exit 'regression' with probability "
              f"{result.power_detect_at_n_detect:.2f} at a true drop of {result.drop:g}")
    console.print(f"{metric}: {result.n_pass} {unit} ({result.sessions_pass} sessions) for an equal candidate to pass with "
                  f"probability {result.power_pass_at_n_pass:.2f}; {detect}. SD of paired differences {result.sd:.3f} "
                  f"({'persona means' if unit == 'personas' else 'sessions'}), margin {result.margin:g}, one-sided alpha "
                  f"{result.alpha:g}.", soft_wrap=True)


def print_validation(report, out) -> None:
    table = Table(title=f"judge {report.judge.model} vs {len(report.raters)} human raters "
                        f"({report.materials} materials)", title_justify="left")
    for column in ("rubric", "score", "units", "ICC(A,1)", "QWK", "Spearman", "α", "MAE", "human ICC(A,1)"):
        table.add_column(column, overflow="fold")

    def cell(stats, key: str) -> str:
        value = getattr(stats, key) if stats is not None else None
        return "—" if value is None else f"{value:.2f}"

    for rubric_id, section in report.rubrics.items():
        for stats_by_score in (section.composites, section.items):
            for score_id, stats in stats_by_score.items():
                jh, hh = stats.judge_human, stats.human_human
                table.add_row(rubric_id, score_id, str(stats.units), cell(jh, "icc_a1"), cell(jh, "qwk"), cell(jh, "spearman"),
                              cell(jh, "krippendorff_alpha"), cell(jh, "mae"), cell(hh, "icc_a1"))
    console.print(table)
    if report.invalid_judge_scores:
        warn(f"{report.invalid_judge_scores} judge scores were invalid (below the minimum mass {report.min_mass:g} or not obtained)"
             " and are left out of the agreement")
    if report.repeat_variability:
        rv = report.repeat_variability
        if rv["mean_sd"] is None:
            console.print(f"scored {rv['repeats']} times: no unit was scored validly in every repeat, so there is no variability to report")
        else:
            console.print(f"scored {rv['repeats']} times: mean SD of a unit's expected score {rv['mean_sd']:.4f} (max {rv['max_sd']:.4f})")
    console.print(f"validation report: [bold]{escape(str(out / 'validation.json'))}[/bold] "
                  f"(record it in runs with --judge-validation)", soft_wrap=True)
