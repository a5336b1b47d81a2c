"""`evalkit gate`: is the candidate run non-inferior to the baseline run on each gated metric?

Exit codes: 0 every metric passes, 1 a regression, 2 cannot decide (incompatible runs, too many invalid
scores, too few sessions for the margin). Writes gate.json, JUnit XML (one test case per metric) and a
Markdown summary for CI job pages.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from rich.markup import escape
from rich.table import Table

from .errors import EvalkitError
from .progress import console
from .statistics.data import Run, incompatibilities, load_run, metric_better, rubrics_of, session_table
from .statistics.noninferiority import decide
from .suites import GateDefaults, load_suite
from .summary import critical_failure

EXIT = {"pass": 0, "regression": 1, "undecided": 2}


class GateReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    created_at: datetime
    baseline: str
    candidate: str
    suite: str
    verdict: Literal["pass", "regression", "undecided"]
    reason: str
    metrics: dict[str, dict[str, Any]]
    settings: dict[str, Any]


def _invalid_rate(run: Run) -> float:
    return float((~run.scores["valid"]).mean()) if len(run.scores) else 1.0


def _critical_check(baseline: Run, candidate: Run, rubric_id: str, rubrics) -> dict[str, Any]:
    """A critical failure in a matched session where the baseline had none is a regression, whatever its size."""
    rubric = next(r for r in rubrics if r.id == rubric_id)

    def outcomes(run: Run) -> dict[str, bool | None]:
        out = {}
        for sid, group in run.scores[run.scores["rubric"] == rubric_id].groupby("session_id"):
            t = run.transcripts.get(sid)
            values = {i: (None if v is None or np.isnan(v) else float(v)) for i, v in zip(group["item"], group["value"], strict=True)}
            out[f"{t.source_id}#{t.replicate}" if t else sid] = critical_failure(rubric, values)
        return out

    base, cand = outcomes(baseline), outcomes(candidate)
    matched = sorted(set(base) & set(cand))
    new = [s for s in matched if cand[s] is True and base[s] is not True]
    unknown = [s for s in matched if cand[s] is None or base[s] is None]
    if new:
        verdict, why = "regression", f"{len(new)} new critical failure(s): {', '.join(new[:5])}"
    elif unknown:
        verdict, why = "undecided", f"{len(unknown)} matched session(s) could not be assessed for critical failures"
    else:
        verdict, why = "pass", "no critical failure the baseline did not have"
    return {"verdict": verdict, "reason": why, "n": len(matched), "new_failures": new}


def gate(baseline: str | Path, candidate: str | Path, *, metrics: list[str] | None = None, margin: float | None = None,
         alpha: float | None = None, power: float | None = None, max_invalid_rate: float | None = None,
         out: str | Path | None = None, show: bool = True, require_validated_judge: bool = False) -> GateReport:
    base, cand = load_run(baseline, name="baseline"), load_run(candidate, name="candidate")
    if require_validated_judge:
        unvalidated = [run.directory for run in (base, cand) if not run.manifest.judge_validation]
        if unvalidated:
            raise EvalkitError(f"cannot gate: {unvalidated[0]} records no judge validation report "
                               "(evalkit judge validate, then evalkit run --judge-validation)")
    problems = incompatibilities([base, cand])
    judges = {r.manifest.roles["judge"].model_hash or r.manifest.roles["judge"].model for r in (base, cand)}
    if len(judges) > 1:
        problems.append("judge: the runs were scored by different judges")
    if problems:
        raise EvalkitError(f"cannot gate: runs are not comparable: {'; '.join(problems)}")
    suite_id = base.manifest.config.suite.id
    try:
        defaults = load_suite(suite_id).suite.gate or GateDefaults(metrics={})
    except EvalkitError:
        defaults = GateDefaults(metrics={})
    chosen = metrics or list(defaults.metrics)
    if not chosen:
        raise EvalkitError(f"cannot gate: suite '{suite_id}' declares no gate metrics; pass --metric")
    margins = {m: margin if margin is not None else defaults.metrics.get(m) for m in chosen}
    missing = [m for m, v in margins.items() if v is None]
    if missing:
        raise EvalkitError(f"cannot gate: no margin for {missing[0]}; pass --margin")
    alpha = alpha if alpha is not None else defaults.alpha
    power = power if power is not None else defaults.power
    max_invalid = max_invalid_rate if max_invalid_rate is not None else defaults.max_invalid_rate
    settings = {"alpha": alpha, "power": power, "max_invalid_rate": max_invalid, "margins": margins}

    rubrics = rubrics_of([base, cand])
    table = session_table([base, cand], rubrics)
    known = set(table["metric"])
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise EvalkitError(f"cannot gate: --metric {unknown[0]} is not a metric of these runs")
    results: dict[str, dict[str, Any]] = {}
    for run in (base, cand):
        rate = _invalid_rate(run)
        if rate > max_invalid:
            raise EvalkitError(f"cannot gate: {rate:.1%} of the {run.name} run's item scores are invalid "
                               f"(limit {max_invalid:.0%}, --max-invalid-rate); see {run.directory / 'scores.jsonl'}")
    for metric in chosen:
        wide = table[table["metric"] == metric].pivot_table(index="session", columns="condition", values="value")
        wide = wide.reindex(columns=["baseline", "candidate"]).dropna()
        sign = 1.0 if metric_better(rubrics, metric) == "higher" else -1.0
        d = (wide["baseline"] - wide["candidate"]).to_numpy() * sign
        results[metric] = decide(d, margins[metric], alpha, power)
    for rubric_id in defaults.critical if not metrics else []:
        results[f"{rubric_id}.critical_failures"] = _critical_check(base, cand, rubric_id, rubrics)

    verdicts = [r["verdict"] for r in results.values()]
    verdict = "regression" if "regression" in verdicts else "undecided" if "undecided" in verdicts else "pass"
    failing = [f"{m}: {r['reason']}" for m, r in results.items() if r["verdict"] == verdict and verdict != "pass"]
    reason = "; ".join(failing) if failing else "every gated metric is non-inferior"
    report = GateReport(created_at=datetime.now(timezone.utc), baseline=str(base.directory), candidate=str(cand.directory),
                        suite=suite_id, verdict=verdict, reason=reason, metrics=results, settings=settings)
    out_dir = Path(out) if out else cand.directory
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gate.json").write_text(json.dumps(json.loads(report.model_dump_json()), indent=2))
    write_junit(report, out_dir / "gate-junit.xml")
    (out_dir / "gate.md").write_text(markdown(report))
    from .report import build_report

    build_report([base.directory, cand.directory], out_dir / "gate-report.html", gate=json.loads(report.model_dump_json()))
    if show:
        print_gate(report, out_dir)
    return report


def write_junit(report: GateReport, path: Path) -> None:
    failures = sum(r["verdict"] == "regression" for r in report.metrics.values())
    errors = sum(r["verdict"] == "undecided" for r in report.metrics.values())
    suite = ET.Element("testsuite", name=f"evalkit gate ({report.suite})", tests=str(len(report.metrics)),
                       failures=str(failures), errors=str(errors), timestamp=report.created_at.isoformat())
    for metric, result in report.metrics.items():
        case = ET.SubElement(suite, "testcase", classname=f"evalkit.gate.{report.suite}", name=metric)
        if result["verdict"] == "regression":
            ET.SubElement(case, "failure", message=result["reason"], type="regression").text = json.dumps(result, default=str)
        elif result["verdict"] == "undecided":
            ET.SubElement(case, "error", message=result["reason"], type="undecided").text = json.dumps(result, default=str)
        ET.SubElement(case, "system-out").text = result["reason"]
    root = ET.Element("testsuites", name="evalkit")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _num(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.3f}"


def markdown(report: GateReport) -> str:
    icon = {"pass": "✅ pass", "regression": "❌ regression", "undecided": "⚠️ cannot decide"}
    lines = [f"## evalkit gate: {icon[report.verdict]}", "",
             f"Suite `{report.suite}` · candidate `{report.candidate}` vs baseline `{report.baseline}` · "
             f"one-sided α = {report.settings['alpha']}, power {report.settings['power']}", "",
             "| metric | verdict | sessions | mean drop | upper bound | margin | needed |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for metric, r in report.metrics.items():
        lines.append(f"| `{metric}` | {icon[r['verdict']]} | {r['n']} | {_num(r.get('mean_drop'))} | "
                     f"{_num(r.get('upper_bound'))} | {r.get('margin', '—')} | {r.get('sessions_needed', '—')} |")
    lines += ["", f"**{report.reason}**", "", "A drop is baseline minus candidate, oriented so positive means worse."]
    return "\n".join(lines) + "\n"


def print_gate(report: GateReport, out_dir: Path) -> None:
    table = Table(title=f"gate {report.suite}: {report.verdict}", title_justify="left")
    for column in ("metric", "verdict", "n", "mean drop", "upper bound", "margin", "needed"):
        table.add_column(column)
    style = {"pass": "green", "regression": "red", "undecided": "yellow"}
    for metric, r in report.metrics.items():
        table.add_row(metric, f"[{style[r['verdict']]}]{r['verdict']}[/]", str(r["n"]), _num(r.get("mean_drop")),
                      _num(r.get("upper_bound")), str(r.get("margin", "—")), str(r.get("sessions_needed", "—")))
    console.print(table)
    console.print(f"[bold {style[report.verdict]}]{report.verdict}[/]: {escape(report.reason)}", soft_wrap=True)
    console.print(f"gate: {escape(str(out_dir / 'gate.json'))}, gate-junit.xml, gate.md, gate-report.html")
