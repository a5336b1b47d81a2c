"""`evalkit gate`: is the candidate run non-inferior to the baseline run on each gated metric?

Verdicts: pass (exit 0), regression (exit 1), undecided (exit 2: incomplete or incompatible runs, too few
shared sessions, too many invalid scores for a metric, too few sessions for the margin). Whatever the verdict,
gate.json, gate-junit.xml, gate.md and gate-report.html are written, so a CI step that reads them always
finds this gate's outcome. The paired analysis is over persona means (statistics/noninferiority.py).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evalkit.analysis.plan import FLOOR_CONFIDENCE, floor_warning, scoring_floor
from evalkit.analysis.runs import Run, compatibility, judge_fitness_warning, left_out, load_run, metric_better, metric_rows, rubrics_of
from evalkit.analysis.summary import critical_failure
from evalkit.content.suites import GateDefaults
from evalkit.core.errors import ConfigError
from evalkit.core.fileio import ensure_directory, write_atomic
from evalkit.statistics.noninferiority import decide, persona_of
from evalkit.statistics.results import NoninferiorityDecision

EXIT = {"pass": 0, "regression": 1, "undecided": 2}
Verdict = Literal["pass", "regression", "undecided"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricVerdict(_Model):
    metric: str
    verdict: Verdict
    reason: str
    margin: float | None = None
    sessions: int = Field(0, description="baseline sessions the metric is gated over")
    invalid_share: float | None = Field(None, description="share of those sessions without a valid score in either run")
    unit: str = Field("persona", description="the unit of the test: drops averaged within persona, t over personas")
    family: str = Field("primary", description="primary when the suite declares the metric primary, else exploratory; "
                        "each gated metric is a test of its own (a regression on any one fails the gate, so no "
                        "multiplicity adjustment makes a regression harder to call)")
    scoring_floor: float | None = Field(None, description=f"what a flawless session scores away from the best value at "
                                        f"{FLOOR_CONFIDENCE:.0%} judge confidence (expected-value scoring), metric units")
    decision: NoninferiorityDecision | None = None


class CriticalVerdict(_Model):
    rubric: str
    verdict: Verdict
    reason: str
    unit: str = Field("session", description="a rule, not a test: any new critical failure in a matched session where the "
                      "risk surfaced is a regression")
    family: str = "primary"
    sessions: int = Field(description="matched sessions in which the candidate's risk surfaced")
    not_surfaced: int = Field(0, description="candidate sessions in which the risk never surfaced (not counted as safe)")
    new_failures: list[str] = []


class GateSettings(_Model):
    alpha: float = Field(gt=0, lt=0.5)
    power: float = Field(gt=0, lt=1)
    max_invalid_rate: float = Field(ge=0, le=1)
    min_shared: float = Field(ge=0, le=1)
    include_flagged: bool
    margins: dict[str, float]
    skip_critical: list[str] = Field([], description="rubrics whose critical-failure check the user turned off by name")


class GateReport(_Model):
    created_at: datetime
    baseline: str
    candidate: str
    suite: str
    verdict: Verdict
    reason: str
    unit: str = Field("persona", description="the unit of replication of every test")
    metrics: dict[str, MetricVerdict] = {}
    critical: dict[str, CriticalVerdict] = {}
    settings: GateSettings | None = None
    warnings: list[str] = []


def _critical_check(baseline: Run, candidate: Run, rubric_id: str, rubrics) -> CriticalVerdict:
    """A critical failure, in a session where the candidate's risk surfaced, that the baseline did not have is a
    regression whatever its size. Sessions where the risk never surfaced are counted, never taken as safe."""
    rubric = next(r for r in rubrics if r.id == rubric_id)

    def outcomes(run: Run) -> dict[str, tuple[bool | None, bool | None]]:
        return {v.key: (v.risk_surfaced, critical_failure(rubric, values)) for v in run.views
                if not v.excluded and (values := v.rubric_values(rubric_id))}

    base, cand = outcomes(baseline), outcomes(candidate)
    matched = sorted(set(base) & set(cand))
    shown = [s for s in matched if cand[s][0] is True]
    not_surfaced = sum(cand[s][0] is not True for s in matched)
    new = [s for s in shown if cand[s][1] is True and not (base[s][0] is True and base[s][1] is True)]
    unknown = [s for s in shown if cand[s][1] is None]
    if new:
        verdict, why = "regression", f"{len(new)} new critical failure(s) where the risk surfaced: {', '.join(new[:5])}"
    elif matched and len(shown) < len(matched) / 2:
        verdict, why = "undecided", (f"the risk surfaced in only {len(shown)} of {len(matched)} risk sessions; the others "
                                     "say nothing about safety")
    elif unknown:
        verdict, why = "undecided", f"{len(unknown)} session(s) could not be assessed for critical failures"
    else:
        verdict, why = "pass", f"no critical failure the baseline did not have, in {len(shown)} sessions where the risk surfaced"
    return CriticalVerdict(rubric=rubric_id, verdict=verdict, reason=why, sessions=len(shown), not_surfaced=not_surfaced,
                           new_failures=new)


def _preconditions(base: Run, cand: Run, require_validated_judge: bool) -> tuple[list[str], list[str]]:
    """(refusals, warnings) before any statistics."""
    problems = []
    for run in (base, cand):
        if run.manifest.status != "complete":
            problems.append(f"the {run.name} run is {run.manifest.status}, not complete (finish it with the same command)")
    if require_validated_judge:
        problems += [f"{run.directory} records no judge validation report" for run in (base, cand) if not run.manifest.judge_validation]
    refuse, warnings = compatibility([base, cand])
    fitness = {run.name: judge_fitness_warning(run.manifest, judged=run.judged) for run in (base, cand)}
    if fitness["baseline"] and fitness["baseline"] == fitness["candidate"]:
        warnings.append(f"both runs: {fitness['baseline']}")
    else:
        warnings += [f"{name}: {text}" for name, text in fitness.items() if text]
    return problems + refuse, warnings


def gate(baseline: str | Path, candidate: str | Path, *, metrics: list[str] | None = None, margin: float | None = None,
         alpha: float | None = None, power: float | None = None, max_invalid_rate: float | None = None,
         min_shared: float = 1.0, include_flagged: bool | None = None, out: str | Path | None = None,
         require_validated_judge: bool = False, skip_critical: list[str] | None = None) -> tuple[GateReport, Path]:
    """Decide, write gate.json / gate-junit.xml / gate.md, and return the report and where it is.

    `include_flagged`: None follows each run's recorded inclusion policy. Every rubric of the suite with critical
    items is checked for new critical failures unless named in `skip_critical`, whatever metrics are gated.
    """
    for name, value, high in (("alpha", alpha, 0.5), ("power", power, 1)):
        if value is not None and not 0 < value < high:
            raise ConfigError(f"{name} {value}: expected a value in (0, {high:g})")
    for name, value in (("max_invalid_rate", max_invalid_rate), ("min_shared", min_shared)):
        if value is not None and not 0 <= value <= 1:
            raise ConfigError(f"{name} {value}: expected a value in [0, 1]")
    if margin is not None and not margin > 0:
        raise ConfigError(f"margin {margin}: expected a positive number")
    base = load_run(baseline, name="baseline", include_flagged=include_flagged)
    cand = load_run(candidate, name="candidate", include_flagged=include_flagged)
    out_dir = ensure_directory(Path(out) if out else cand.directory, "out")
    defaults = base.suite.suite.gate or GateDefaults(metrics={})  # the gate block of the suite the run used
    settings = GateSettings(alpha=alpha if alpha is not None else defaults.alpha, power=power if power is not None else defaults.power,
                            max_invalid_rate=max_invalid_rate if max_invalid_rate is not None else defaults.max_invalid_rate,
                            min_shared=min_shared, include_flagged=cand.inclusion.include_flagged, margins={},
                            skip_critical=sorted(skip_critical or []))
    report = GateReport(created_at=datetime.now(timezone.utc), baseline=str(base.directory), candidate=str(cand.directory),
                        suite=base.manifest.config.suite.id, verdict="undecided", reason="", settings=settings)
    problems, report.warnings = _preconditions(base, cand, require_validated_judge)
    chosen = metrics or list(defaults.metrics)
    if not problems and not chosen:
        problems.append(f"suite '{report.suite}' declares no gate metrics; pass a metric")
    margins = {m: margin if margin is not None else defaults.metrics.get(m) for m in chosen}
    if not problems and (missing := [m for m, v in margins.items() if v is None]):
        problems.append(f"no margin for {missing[0]}; pass a margin")
    rubrics = rubrics_of([base, cand])
    critical = [r.id for r in rubrics if r.critical_items]
    if not problems and (unknown := sorted(set(skip_critical or []) - set(critical))):
        problems.append(f"--skip-critical {unknown[0]}: not a rubric with critical items in these runs "
                        f"({', '.join(critical) if critical else 'none has any'})")
    if problems:
        report.reason = "; ".join(problems)
        return _write(report, out_dir), out_dir
    settings.margins = margins  # type: ignore[assignment]
    table = metric_rows([base, cand])
    known = set(table["metric"])
    if missing := [m for m in chosen if m not in known]:
        report.reason = f"metric {missing[0]} is not a metric of these runs" + left_out(base, cand)
        return _write(report, out_dir), out_dir
    from evalkit.analysis.compare import primary_metrics

    declared = set(primary_metrics([base, cand])[0])
    for metric in chosen:
        verdict = _metric_verdict(metric, table, margins[metric], settings, metric_better(rubrics, metric))  # type: ignore[arg-type]
        verdict.scoring_floor = scoring_floor(rubrics, metric)
        verdict.family = "primary" if metric in declared else "exploratory"
        if (text := floor_warning(metric, margins[metric], verdict.scoring_floor)) is not None:  # type: ignore[arg-type]
            report.warnings.append(text)
        report.metrics[metric] = verdict
    for rubric_id in critical:
        if rubric_id not in settings.skip_critical:
            report.critical[rubric_id] = _critical_check(base, cand, rubric_id, rubrics)
    verdicts = [v.verdict for v in (*report.metrics.values(), *report.critical.values())]
    report.verdict = "regression" if "regression" in verdicts else "undecided" if "undecided" in verdicts else "pass"
    failing = [f"{m}: {v.reason}" for m, v in (*report.metrics.items(), *((f"{k}.critical_failures", v) for k, v in report.critical.items()))
               if v.verdict == report.verdict and report.verdict != "pass"]
    report.reason = "; ".join(failing) if failing else "every gated metric is non-inferior"
    return _write(report, out_dir), out_dir


async def gate_async(baseline: str | Path, candidate: str | Path, **kwargs) -> tuple[GateReport, Path]:
    """`gate` inside a running event loop (a notebook): the work runs in a thread, so the loop stays free."""
    import asyncio

    return await asyncio.to_thread(gate, baseline, candidate, **kwargs)


def _metric_verdict(metric: str, table, margin: float, settings: GateSettings, better: str) -> MetricVerdict:
    rows = table[table["metric"] == metric]
    wide = rows.pivot_table(index="session", columns="condition", values="value", aggfunc="first", dropna=False)
    wide = wide.reindex(columns=["baseline", "candidate"])
    both = wide.loc[wide.index.isin(rows.loc[rows["condition"] == "baseline", "session"])]  # the baseline's sessions
    base_sessions = both.index
    shared = both.index.isin(rows.loc[rows["condition"] == "candidate", "session"])  # ... that the candidate holds too
    if len(base_sessions) == 0:
        return MetricVerdict(metric=metric, verdict="undecided", reason="the baseline has no session for this metric", margin=margin)
    share = float(shared.mean())
    if share < settings.min_shared:
        return MetricVerdict(metric=metric, verdict="undecided", margin=margin, sessions=len(base_sessions),
                             reason=f"the candidate has {int(shared.sum())} of the baseline's {len(base_sessions)} sessions "
                                    f"({share:.0%}; at least {settings.min_shared:.0%} required)")
    scored = both[shared]
    invalid = float(scored.isna().any(axis=1).mean())  # sessions both runs hold, without a valid score in either
    if invalid > settings.max_invalid_rate:
        return MetricVerdict(metric=metric, verdict="undecided", margin=margin, sessions=len(base_sessions), invalid_share=invalid,
                             reason=f"{invalid:.1%} of its {len(scored)} sessions have no valid score in one of the runs "
                                    f"(limit {settings.max_invalid_rate:.0%})")
    pairs = both.dropna()
    sign = 1.0 if better == "higher" else -1.0
    d = (pairs["baseline"] - pairs["candidate"]).to_numpy() * sign
    decision = decide(d, margin, settings.alpha, settings.power, personas=[persona_of(s) for s in pairs.index])
    return MetricVerdict(metric=metric, verdict=decision.verdict, reason=decision.reason, margin=margin,
                         sessions=len(base_sessions), invalid_share=invalid, decision=decision)


def _write(report: GateReport, out_dir: Path) -> GateReport:
    if not report.reason:
        report.reason = "cannot decide"
    write_atomic(out_dir / "gate-junit.xml", junit(report))
    write_atomic(out_dir / "gate.md", markdown(report))
    write_atomic(out_dir / "gate.json", report.model_dump_json(indent=2))  # last: its presence means the others are this gate's
    return report


def _cases(report: GateReport) -> list[tuple[str, Verdict, str]]:
    cases = [(m, v.verdict, v.reason) for m, v in report.metrics.items()]
    cases += [(f"{r}.critical_failures", v.verdict, v.reason) for r, v in report.critical.items()]
    return cases or [("preconditions", report.verdict, report.reason)]


def junit(report: GateReport) -> str:
    cases = _cases(report)
    suite = ET.Element("testsuite", name=f"evalkit gate ({report.suite})", tests=str(len(cases)),
                       failures=str(sum(v == "regression" for _, v, _ in cases)),
                       errors=str(sum(v == "undecided" for _, v, _ in cases)), timestamp=report.created_at.isoformat())
    for name, verdict, reason in cases:
        case = ET.SubElement(suite, "testcase", classname=f"evalkit.gate.{report.suite}", name=name)
        if verdict == "regression":
            ET.SubElement(case, "failure", message=reason, type="regression").text = reason
        elif verdict == "undecided":
            ET.SubElement(case, "error", message=reason, type="undecided").text = reason
        ET.SubElement(case, "system-out").text = reason
    root = ET.Element("testsuites", name="evalkit")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _num(value: float | None) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.3f}"


def markdown(report: GateReport) -> str:
    icon = {"pass": "✅ pass", "regression": "❌ regression", "undecided": "⚠️ cannot decide"}
    lines = [f"## evalkit gate: {icon[report.verdict]}", "",
             f"Suite `{report.suite}` · candidate `{report.candidate}` vs baseline `{report.baseline}`", "",
             f"**{report.reason}**", ""]
    if report.metrics:
        lines += ["| metric | verdict | personas | sessions | mean drop | upper bound | margin | scoring floor | personas needed |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for metric, v in report.metrics.items():
            d = v.decision
            lines.append(f"| `{metric}` | {v.verdict} | {d.personas if d else '—'} | {d.n if d else v.sessions} | "
                         f"{_num(d.mean_drop if d else None)} | {_num(d.upper_bound if d else None)} | {v.margin if v.margin is not None else '—'} | "
                         f"{_num(v.scoring_floor)} | {f'{d.personas_needed} ({d.sessions_needed} sessions)' if d else '—'} |")
    for rubric, c in report.critical.items():
        lines.append(f"\n`{rubric}` critical failures: {c.verdict} — {c.reason} (risk not surfaced in {c.not_surfaced})")
    if report.settings:
        s = report.settings
        lines += ["", f"One-sided alpha {s.alpha:g}, power {s.power:g}, invalid limit {s.max_invalid_rate:.0%} per metric, "
                      f"shared sessions at least {s.min_shared:.0%}, flagged sessions {'kept' if s.include_flagged else 'left out'}. "
                      "Drops are baseline − candidate in the metric's better direction, averaged within persona; the test "
                      "is over personas (t on personas − 1 df). Scoring floor: a flawless session's distance from the best "
                      f"value at {FLOOR_CONFIDENCE:.0%} judge confidence."]
    lines += [f"- ⚠️ {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"
