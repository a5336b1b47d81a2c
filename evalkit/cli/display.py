"""What the CLI draws: live progress for a run, and its tables. The library never imports this."""

from __future__ import annotations

import os
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evalkit.core.console import console, out_console, printable, warn
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


def print_listing(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A listing on stdout: a table on a terminal; piped (grep, a CI log), one tab-separated line per row, never wrapped."""
    if not out_console.is_terminal:
        for row in rows:
            out_console.file.write("\t".join(printable(cell) for cell in row) + "\n")  # rich would expand the tabs
        return
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    out_console.print(table)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def print_summary(summary: Summary, names: dict[str, dict[str, str]]) -> None:
    """One table per rubric: composites first, then items; then persona adherence."""
    for rubric_id, rs in summary.rubrics.items():
        if not any(stat.n or stat.n_invalid for stat in (*rs.composites.values(), *rs.items.values())):
            out_console.print(f"{rubric_id}: no score in these sessions"
                              + (" (it rates risk personas' sessions only)" if rs.applies_to == "risk" else ""), soft_wrap=True)
            if rs.critical_failures:
                print_critical(rs.critical_failures)
            continue
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
        out_console.print(table)
        critical = rs.critical_failures
        if critical:
            print_critical(critical)
    if summary.excluded:
        out_console.print("left out of these statistics: " + ", ".join(f"{n} {why} session(s)" for why, n in summary.excluded.items())
                          + " (--include-flagged keeps flagged ones)", soft_wrap=True)
    adherence = summary.adherence
    if adherence:
        print_adherence(adherence)
    if summary.counts.tokens:
        used = "; ".join(f"{role} {t.get('prompt', 0):,} prompt, {t.get('generated', 0):,} generated"
                         for role, t in sorted(summary.counts.tokens.items(), key=lambda kv: kv[0] != "therapist"))
        out_console.print(f"tokens in the transcripts: {used}", soft_wrap=True)
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
        out_console.print(f"persona adherence over {adherence.sessions_checked} checked sessions, pass rate per check: {checks}; "
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
        out_console.print(f"[bold yellow]critical failures: not assessable[/bold yellow]; {escape(surfaced)}", soft_wrap=True)
    else:
        style = "bold red" if critical.with_failure else "bold green"
        out_console.print(f"[{style}]critical failures: {critical.with_failure} of {critical.sessions} sessions where the risk "
                          f"surfaced ({critical.share:.0%}, 95% CI clustered by persona {critical.ci_low:.0%}–{critical.ci_high:.0%})"
                          f"[/{style}]; "
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


def _labels(conditions: list[str]) -> dict[str, str]:
    """Short labels for runs (A, B, ...) when their names would crowd the terminal; the names themselves otherwise."""
    if len(conditions) <= 2 and all(len(c) <= 12 for c in conditions):
        return {c: c for c in conditions}
    letters = [chr(ord("A") + i) if i < 26 else f"R{i + 1}" for i in range(len(conditions))]
    return dict(zip(conditions, letters, strict=True))


def _arrow(better: str) -> str:
    return "↑" if better == "higher" else "↓"


def _short_verdict(r, labels: dict[str, str]) -> str:
    """The metric's verdict with run names replaced by their labels."""
    text = r.verdict or "—"
    for name in sorted(labels, key=len, reverse=True):
        if labels[name] != name:
            text = text.replace(f"{name} better", f"{labels[name]} better").replace(f"than {name} ", f"than {labels[name]} ")
            text = text.replace(f"than {name};", f"than {labels[name]};")
            if text.endswith(f"than {name}"):
                text = text[: -len(name)] + labels[name]
    return text


def _compact_verdict(r, labels: dict[str, str]) -> str:
    """One short phrase per exploratory metric: 'best D (adj p .04)', 'D > A (.015)', or 'no difference shown'."""
    mm = r.mixed_model
    if mm is None:
        return r.mixed_model_error or "not estimable"
    if r.best:
        worst = max(c.p_adjusted for c in mm.contrasts if r.best in (c.a, c.b) and c.p_adjusted is not None)
        return f"best {labels[r.best]} (adj p {'< .001' if worst < 0.001 else f'≤ {worst:.3f}'})"
    higher = r.better == "higher"
    shown = []
    for c in mm.contrasts:
        if c.p_adjusted is not None and c.p_adjusted < 0.05 and c.estimate != 0:
            a_better = (c.estimate > 0) == higher
            winner, loser = (c.a, c.b) if a_better else (c.b, c.a)
            shown.append(f"{labels[winner]} > {labels[loser]} ({_p(c.p_adjusted)})")
    if shown:
        return "; ".join(shown)
    if r.p_adjusted is not None and r.p_adjusted < 0.05:
        return "differ overall; no pair shown"
    return "no difference shown"


def print_comparison(comparison, out_dir, full: bool = False) -> None:
    """Primary metrics first (estimate, CI, adjusted p, verdict in words), then one line per exploratory metric; with
    `full`, every table. Run names are abbreviated with a legend when they would not fit."""
    conditions = list(comparison.runs)
    labels = _labels(conditions)
    personas = f" of {comparison.personas} personas" if comparison.personas else ""
    # Text wraps at word boundaries to the terminal's width; run names are abbreviated with a legend when they would
    # crowd it, one run per line (a name is never broken).
    out_console.print(f"[bold]{escape(comparison.suite)}[/bold]: {len(conditions)} runs, {comparison.sessions} sessions{personas}; "
                      f"unit of analysis: the persona; familywise alpha {comparison.alpha:g} (Holm within each family)")
    if any(labels[c] != c for c in conditions):
        for c in conditions:
            out_console.print(f"  {labels[c]} = {escape(c)}" + (" (baseline)" if c == comparison.baseline else ""), soft_wrap=True)
    primary = [r for r in comparison.metrics.values() if r.family == "primary"]
    exploratory = [r for r in comparison.metrics.values() if r.family != "primary"]
    if primary:
        out_console.print("\n[bold]Primary metrics[/bold] (familywise error controlled over these; estimated marginal means, 95% CI)")
        for r in primary:
            _print_primary(r, conditions, labels, comparison.baseline)
    else:
        out_console.print("\nno primary metrics declared: every result below is exploratory (--primary names them)")
    if exploratory and not full:
        out_console.print(f"\n[bold]Exploratory metrics[/bold] ({len(exploratory)}; adjusted within their own family: leads, not "
                          "findings; --all for every table)")
        table = Table(box=None, pad_edge=False, show_header=True, header_style="dim", expand=False)
        width = max(len(r.metric) for r in exploratory) + 2
        table.add_column("metric", no_wrap=True, overflow="ellipsis", min_width=min(width, 24), max_width=width)
        for c in conditions:
            table.add_column(labels[c], justify="right", no_wrap=True, min_width=5)
        table.add_column("adj p", justify="right", no_wrap=True, min_width=5)
        table.add_column("verdict (X > Y: X better; adjusted p)", no_wrap=True, overflow="ellipsis", ratio=1, min_width=12)
        for r in exploratory:
            means = [_fmt(r.mixed_model.emms[c].mean if r.mixed_model else r.means.get(c)) for c in conditions]
            table.add_row(f"{r.metric} {_arrow(r.better)}", *means, _p(r.p_adjusted), _compact_verdict(r, labels))
        out_console.print(table)
    if full:
        _print_full(comparison, conditions, labels)
    if comparison.pairwise_judge:
        for cand, w in comparison.pairwise_judge.per_candidate.items():
            rate = "—" if w.win_rate is None else f"{w.win_rate:.0%}"
            out_console.print(f"judge preference {escape(cand)} vs {escape(comparison.baseline or '')}: personas won/lost/tied "
                              f"{w.wins}/{w.losses}/{w.ties} (sessions {w.session_wins}/{w.session_losses}/{w.session_ties}; "
                              f"{comparison.pairwise_judge.kind}), persona win rate {rate} {_ci(w.ci_low, w.ci_high, pct=True)}, "
                              f"sign test p {_p(w.sign_test_p)}, {w.invalid or 0} invalid")
    for warning in comparison.warnings:
        warn(warning)
    console.print(f"comparison: [bold]{escape(str(out_dir / 'comparison.json'))}[/bold] (tables as CSV and Parquet) · report: "
                  f"[bold]{escape(str(out_dir / 'report.html'))}[/bold]", soft_wrap=True)


def _print_primary(r, conditions: list[str], labels: dict[str, str], baseline: str | None) -> None:
    mm = r.mixed_model
    out_console.print(f"[bold]{escape(r.metric)}[/bold] {_arrow(r.better)} {escape(r.name)}")
    if mm:
        cells = "  ".join(f"{labels[c]} {mm.emms[c].mean:.2f} {_ci(mm.emms[c].ci_low, mm.emms[c].ci_high)}" for c in conditions)
        out_console.print(f"  {cells}")
        test = f"F({mm.df}, {mm.df_denominator:.0f}) = {mm.f_statistic:.2f}, p {_p(r.p_value)}, adjusted p {_p(r.p_adjusted)}"
    else:
        test = "mixed model not estimable"
    style = "green" if r.best else "yellow" if "not estimable" in (r.verdict or "") else ""
    verdict = escape(_short_verdict(r, labels))
    out_console.print(f"  {test} — " + (f"[{style}]{verdict}[/{style}]" if style else verdict))
    for cand, w in r.head_to_head.items():
        out_console.print(f"  vs baseline {labels.get(baseline, baseline)}: {labels[cand]} won {w.wins}, lost {w.losses}, tied {w.ties} "
                          f"personas (sign test p {_p(w.sign_test_p)}, adjusted {_p(w.p_adjusted)}; win rate "
                          f"{'—' if w.win_rate is None else f'{w.win_rate:.0%}'} {_ci(w.ci_low, w.ci_high, pct=True)})")
    bt = r.bradley_terry
    if bt is not None and bt:
        ranked = sorted(bt.strengths.items(), key=lambda kv: -(kv[1].strength or 0))
        text = ", ".join(f"{labels[m]} {s.strength:+.2f} {_ci(s.ci_low, s.ci_high)}" for m, s in ranked)
        out_console.print(f"  Bradley–Terry (log-odds vs {labels[bt.reference]}, CI clustered by persona): {text}")
    elif r.bradley_terry_error:
        out_console.print(f"  Bradley–Terry: {escape(r.bradley_terry_error)}")


def _print_full(comparison, conditions: list[str], labels: dict[str, str]) -> None:
    table = Table(title="every metric: estimated marginal means; mixed-model F test (persona as the unit); Friedman over "
                        "persona blocks", title_justify="left")
    table.add_column("metric", no_wrap=True, overflow="ellipsis")
    table.add_column("family", no_wrap=True)
    for c in conditions:
        table.add_column(labels[c], justify="right", no_wrap=True)
    for column in ("F (df)", "p", "adj p", "Friedman p", "best"):
        table.add_column(column, justify="right", no_wrap=True)
    for metric, r in comparison.metrics.items():
        mm = r.mixed_model
        means = [_fmt(mm.emms[c].mean if mm else r.means.get(c)) for c in conditions]
        test = f"{mm.f_statistic:.2f} ({mm.df}, {mm.df_denominator:.0f})" if mm else "not estimable"
        table.add_row(f"{metric} {_arrow(r.better)}", r.family[:5], *means, test, _p(r.p_value), _p(r.p_adjusted),
                      _p(r.friedman.p_value), labels.get(r.best, "—") if r.best else "—")
    out_console.print(table)
    if comparison.baseline:
        wins = Table(title=f"against {comparison.baseline}: personas won/lost/tied (a persona's mean over its matched sessions)",
                     title_justify="left")
        for column in ("metric", "run", "W/L/T", "win rate", "95% Wilson CI", "sign p", "adj p", "sessions W/L/T"):
            wins.add_column(column, no_wrap=True, overflow="ellipsis")
        for metric, r in comparison.metrics.items():
            for cand, w in r.head_to_head.items():
                wins.add_row(metric, labels[cand], f"{w.wins}/{w.losses}/{w.ties}",
                             "—" if w.win_rate is None else f"{w.win_rate:.0%}", _ci(w.ci_low, w.ci_high, pct=True),
                             _p(w.sign_test_p), _p(w.p_adjusted), f"{w.session_wins}/{w.session_losses}/{w.session_ties}")
        out_console.print(wins)
    contrasts = Table(title="pairwise contrasts (a − b; Holm over the family's contrasts)", title_justify="left")
    for column in ("metric", "a − b", "estimate", "95% CI", "p", "adj p"):
        contrasts.add_column(column, no_wrap=True, overflow="ellipsis")
    for metric, r in comparison.metrics.items():
        for c in (r.mixed_model.contrasts if r.mixed_model else []):
            contrasts.add_row(metric, f"{labels[c.a]} − {labels[c.b]}", f"{c.estimate:+.2f}", _ci(c.ci_low, c.ci_high),
                              _p(c.p), _p(c.p_adjusted))
    out_console.print(contrasts)


def print_gate(report, out_dir) -> None:
    table = Table(title=f"gate: {report.suite} (candidate vs baseline; drops averaged within persona, t over personas)",
                  title_justify="left")
    for column in ("metric", "verdict", "personas", "sessions", "mean drop", "upper bound", "margin", "floor", "needed"):
        table.add_column(column, no_wrap=True, overflow="ellipsis", min_width=len(column))
    style = {"pass": "green", "regression": "red", "undecided": "yellow"}
    for metric, v in report.metrics.items():
        d = v.decision
        table.add_row(metric, f"[{style[v.verdict]}]{v.verdict}[/]", str(d.personas) if d else "—", str(d.n if d else v.sessions),
                      _fmt(d.mean_drop if d else None), _fmt(d.upper_bound if d else None),
                      "—" if v.margin is None else f"{v.margin:g}", _fmt(v.scoring_floor),
                      f"{d.personas_needed} personas" if d else "—")
    for rubric, c in report.critical.items():
        table.add_row(f"{rubric}.critical_failures", f"[{style[c.verdict]}]{c.verdict}[/]", "", str(c.sessions), "", "", "", "", "")
    # Piped into a CI log, rich would squeeze nine columns into 80 and cut every header: a log line may be wider.
    (out_console if out_console.is_terminal else Console(file=out_console.file, width=160)).print(table)
    out_console.print(f"[bold {style[report.verdict]}]{report.verdict}[/]: {escape(report.reason)}", soft_wrap=True)
    for warning in report.warnings:
        warn(warning)
    console.print(f"gate: {escape(str(out_dir / 'gate.json'))}, gate-junit.xml, gate.md, gate-report.html", soft_wrap=True)


def print_plan(result) -> None:
    """The design a gate needs, in personas x replicates, with the variance it rests on and the scoring floor."""
    metric = result.metric or "metric"
    r = result.replicates
    detect = ("not reachable (" + (result.note or "") + ")" if result.n_detect is None else
              f"{result.n_detect} personas x {r} ({result.sessions_detect} sessions) to exit 'regression' with probability "
              f"{result.power_detect_at_n_detect:.2f} at a true drop of {result.drop:g}")
    out_console.print(f"[bold]{escape(metric)}[/bold]: {result.n_pass} personas x {r} replicate{'s' if r != 1 else ''} "
                      f"({result.sessions_pass} sessions) for an equal candidate to pass with probability "
                      f"{result.power_pass_at_n_pass:.2f}; {detect}.", soft_wrap=True)
    out_console.print(f"SD of a persona-mean difference {result.sd:.3f} = sqrt({result.var_between:.4g} between personas + "
                      f"{result.var_within:.4g} within / {r}); {escape(result.source)}. Margin {result.margin:g}, one-sided alpha "
                      f"{result.alpha:g}.", soft_wrap=True)
    others = "; ".join(f"{o.replicates} replicate{'s' if o.replicates != 1 else ''}: {o.personas_pass} personas "
                       f"({o.sessions_pass} sessions)" for o in result.options)
    if others and result.within_known:
        out_console.print(f"for an equal candidate to pass, by replicates per persona: {others}", soft_wrap=True)
    if result.scoring_floor is not None:
        out_console.print(f"scoring floor {result.scoring_floor:.3g}: a flawless session's distance from the best value when the "
                          "judge puts 90% on the right level (docs/statistics.md)", soft_wrap=True)
    for warning in result.warnings:
        warn(warning)


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
    out_console.print(table)
    if report.invalid_judge_scores:
        warn(f"{report.invalid_judge_scores} judge scores were invalid (below the minimum mass {report.min_mass:g} or not obtained)"
             " and are left out of the agreement")
    if report.repeat_variability:
        rv = report.repeat_variability
        if rv["mean_sd"] is None:
            out_console.print(f"scored {rv['repeats']} times: no unit was scored validly in every repeat, so there is no variability to report")
        else:
            out_console.print(f"scored {rv['repeats']} times: mean SD of a unit's expected score {rv['mean_sd']:.4f} (max {rv['max_sd']:.4f})")
    console.print(f"validation report: [bold]{escape(str(out / 'validation.json'))}[/bold] "
                  f"(record it in runs with --judge-validation)", soft_wrap=True)
