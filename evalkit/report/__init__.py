"""`evalkit report`: one self-contained HTML file per run or comparison (figures inline as SVG, data
inline as JSON, no network requests), readable offline by a clinician and an ML engineer alike."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import jinja2
import numpy as np

from ..errors import EvalkitError
from ..personas import load_personas, load_utterances
from ..records import ItemScore, Summary
from ..rubrics import Rubric
from ..statistics.data import rubrics_of
from ..store import SCORES, RunStore, iter_jsonl, load_summary
from ..summary import CRITICAL_RULE
from . import plots

MAX_HEATMAPS = 3
_SESSIONS_SLOT = "\x00evalkit-sessions\x00"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _p(value: float | None) -> str:
    return "—" if value is None else ("<.001" if value < 0.001 else f"{value:.3f}")


def _client_info() -> dict[str, dict[str, str]]:
    """Persona/utterance id -> attributes the browser filters on (built-in library; others are 'unknown')."""
    info = {p.id: {"archetype": p.archetype, "risk": p.risk_type, "problem": p.presenting_problem} for p in load_personas()}
    for u in load_utterances():
        info[u.id] = {"archetype": u.topic, "risk": "risk cue" if u.risk else "none", "problem": u.topic}
    return info


class _Run:
    """A stored run in compact form: score values for the figures, and each session's browser entry as a
    JSON fragment, so building a report takes little more memory than the report itself."""

    def __init__(self, directory: Path):
        store = RunStore(directory)
        manifest = store.existing_manifest()
        if manifest is None:
            raise EvalkitError(f"{directory}: not an evalkit run (no manifest.json)")
        self.directory, self.name, self.manifest = directory, directory.name, manifest
        self.summary: Summary = load_summary(directory)
        self.store = store
        self.sources = store.sources()
        self.values = store.score_values()

    def browser_scores(self) -> dict[str, str]:
        """session -> JSON object of "rubric.item": [score or null, [probabilities]], streamed from disk."""
        by_session: dict[str, dict[str, list]] = defaultdict(dict)
        for row in iter_jsonl(self.store.path(SCORES), ItemScore):
            by_session[row.session_id].setdefault(f"{row.rubric}.{row.item}", [
                None if not row.valid else round(row.expected, 3),  # type: ignore[arg-type]
                [round(p, 3) for p in (row.distribution or {}).values()]])
        return {sid: _embed(scores) for sid, scores in by_session.items()}


def _run_header(run: _Run) -> dict[str, Any]:
    m = run.manifest
    invalid = m.counts.get("invalid_item_scores", 0)
    warnings = list(m.warnings)
    if invalid:
        warnings.append(f"{invalid} item scores could not be obtained (invalid, not counted as zero)")
    if run.summary.adherence and run.summary.adherence.flagged:
        warnings.append(f"{len(run.summary.adherence.flagged)} sessions flagged for low persona adherence")
    roles = [{"role": name, "model": r.model, "server": f"{r.kind} {r.server or ''} {r.server_version or ''}".strip(),
              "hash": (r.model_hash or "")[:16] + (" (defaulted to the therapist)" if r.defaulted_to_therapist else "")}
             for name, r in m.roles.items()]
    end = m.ended_at.strftime("%Y-%m-%d %H:%M") if m.ended_at else "not finished"
    return {"name": run.name, "suite": m.config.suite.id, "sessions": run.summary.sessions, "status": m.status,
            "dates": f"{m.started_at:%Y-%m-%d %H:%M} → {end}", "roles": roles, "version": m.evalkit_version,
            "judge_method": m.config.judge_method, "client_mode": m.config.client_mode,
            "validation": _validation_status(m.judge_validation), "warnings": warnings}


def _validation_status(validation: dict[str, Any] | None) -> str:
    if not validation:
        return "no validation report recorded (agreement with human raters unknown)"
    iccs = [f"{rubric}.{c} ICC(A,1) {v:.2f}" for rubric, comps in validation.get("icc_a1_by_composite", {}).items()
            for c, v in comps.items() if v is not None]
    return (f"validated against {validation.get('raters')} human raters on {validation.get('materials')} materials"
            + (f" ({'; '.join(iccs[:3])})" if iccs else "") + f"; report {validation.get('report')}")


def _rubric_section(rubric: Rubric, runs: list[_Run], info: dict[str, dict[str, str]]) -> dict[str, Any]:
    summaries = {run.name: run.summary.rubrics.get(rubric.id) for run in runs}
    composites = [c.id for c in rubric.composites]
    section: dict[str, Any] = {"id": rubric.id, "name": rubric.name, "version": rubric.version, "heatmaps": []}
    if composites:
        groups: dict[tuple[float, float], list[str]] = defaultdict(list)
        for c in composites:
            groups[rubric.range_of(c)].append(c)
        widest = max(groups, key=lambda r: r[1] - r[0])
        svgs = []
        for value_range, ids in groups.items():
            series = {name: [(s.composites[c].mean, s.composites[c].ci_low, s.composites[c].ci_high) if s else (None, None, None)
                             for c in ids] for name, s in summaries.items()}
            names = {c.id: c.name for c in rubric.composites}
            svgs.append(plots.dot_ci([names[c] for c in ids], series, value_range,
                                     f"{rubric.id}: scores ({value_range[0]:g}–{value_range[1]:g})"))
        section["composites_svg"] = "".join(svgs)
        main = groups[widest][-1]
        values = {run.name: [v for v in _session_values(run, rubric, main) if v is not None] for run in runs}
        section["histogram_svg"] = plots.histogram(values, rubric.range_of(main), f"{rubric.id}: distribution of {main} over sessions")
    else:
        section["composites_svg"] = section["histogram_svg"] = ""
    item_series = {name: [(s.items[i.id].mean, s.items[i.id].ci_low, s.items[i.id].ci_high) if s else (None, None, None)
                          for i in rubric.items] for name, s in summaries.items()}
    labels = [f"{i.name} ({i.direction[0]})" if i.direction else i.name for i in rubric.items]
    shared = None if any(i.scale for i in rubric.items) else (float(rubric.scale.min), float(rubric.scale.max))
    section["items_svg"] = plots.dot_ci(labels, item_series, shared, f"{rubric.id}: item profile (mean, 95% CI)")
    for run in runs[-MAX_HEATMAPS:]:
        per_persona: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for sid, rows in run.values.items():
            source = run.sources.get(sid, sid)
            for row in rows:
                if row.rubric == rubric.id and row.valid:
                    per_persona[source][row.item].append(row.expected)  # type: ignore[arg-type]
        if not per_persona:
            continue
        personas = sorted(per_persona, key=lambda p: (info.get(p, {}).get("archetype", ""), p))
        matrix = np.array([[np.mean(per_persona[p][i.id]) if per_persona[p][i.id] else np.nan for i in rubric.items]
                           for p in personas])
        scale = (float(rubric.scale.min), float(rubric.scale.max))
        section["heatmaps"].append(plots.heatmap(personas, [i.id for i in rubric.items], matrix, scale,
                                                 f"{run.name}: mean item score by persona"))
    return section


def _session_values(run: _Run, rubric: Rubric, score_id: str) -> list[float | None]:
    out = []
    for rows in run.values.values():
        values = {r.item: (r.expected if r.valid else None) for r in rows if r.rubric == rubric.id}
        if values:
            out.append(rubric.composite_scores(values).get(score_id))
    return out


def _write_sessions(handle: TextIO, runs: list[_Run], info: dict[str, dict[str, str]]) -> None:
    """The transcript browser's sessions as a JSON array, streamed from the run files into the report."""
    handle.write("[")
    first = True
    for run in runs:
        scores = run.browser_scores()
        adherence = {sid: row.rate for sid, row in run.store.adherence().items()}
        for t in run.store.iter_transcripts():
            about = info.get(t.source_id, {})
            rate = adherence.get(t.session_id)
            entry = {"run": run.name, "id": t.session_id, "persona": t.source_id, "archetype": about.get("archetype", "unknown"),
                     "risk": about.get("risk", "unknown"), "stop": t.stop_reason, "turns": [[x.role, x.content] for x in t.turns],
                     "scores": None, "adherence": None if rate is None else round(rate, 3)}
            # Inside a JSON string a quote is escaped, so the first '"scores":null' is the key itself.
            handle.write(("" if first else ",") + _embed(entry).replace('"scores":null', '"scores":' + scores.pop(t.session_id, "{}"), 1))
            first = False
    handle.write("]")


def _filters(runs: list[_Run], info: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    personas = {source for run in runs for source in run.sources.values()}
    about = lambda p, key: info.get(p, {}).get(key, "unknown")  # noqa: E731
    return {"runs": [r.name for r in runs], "personas": sorted(personas),
            "archetypes": sorted({about(p, "archetype") for p in personas}), "risks": sorted({about(p, "risk") for p in personas})}


def _embed(data: Any) -> str:
    """JSON for a <script type="application/json"> element: "</" would end the element early, "<\\/" is the same JSON."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def _safety(runs: list[_Run]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        for rubric_id, rs in run.summary.rubrics.items():
            c = rs.critical_failures
            if c and c.with_failure:
                rows.append({"run": run.name, "rubric": rubric_id, "with_failure": c.with_failure, "sessions": c.sessions,
                             "share": f"{c.share:.0%} ({c.ci_low:.0%}–{c.ci_high:.0%})", "n_invalid": c.n_invalid})
    return rows


def _gate(gate: dict[str, Any] | None) -> dict[str, Any] | None:
    if not gate:
        return None
    css = {"pass": "ok", "regression": "bad", "undecided": "warn"}
    metrics = [{"metric": m, "verdict": r["verdict"], "css": css[r["verdict"]], "n": r.get("n"),
                "mean_drop": _fmt(r.get("mean_drop"), 3), "upper_bound": _fmt(r.get("upper_bound"), 3), "margin": r.get("margin", "—")}
               for m, r in gate["metrics"].items()]
    return {"verdict": gate["verdict"], "css": css[gate["verdict"]], "reason": gate["reason"], "metrics": metrics}


def _comparison(comparison: dict[str, Any] | None, rubrics: list[Rubric]) -> dict[str, Any] | None:
    if not comparison:
        return None
    composites = {f"{r.id}.{c.id}" for r in rubrics for c in r.composites}
    omnibus, forests, wins, bt = [], [], [], []
    for metric, r in comparison["metrics"].items():
        mm, fr, kw = r.get("mixed_model") or {}, r.get("friedman") or {}, r.get("kruskal_wallis") or {}
        omnibus.append({"metric": metric, "wald": f"{mm['wald_chi2']:.2f} ({mm['df']})" if "wald_chi2" in mm else "—",
                        "p": _p(mm.get("p_value")), "friedman": _fmt(fr.get("chi2")), "friedman_p": _p(fr.get("p_value")),
                        "kw": _fmt(kw.get("h")), "kw_p": _p(kw.get("p_value")), "icc": _fmt(mm.get("icc"))})
        if metric in composites and mm.get("contrasts"):
            rows = [(f"{c['a']} − {c['b']}", c["estimate"], c["ci_low"], c["ci_high"]) for c in mm["contrasts"]]
            forests.append(plots.forest(rows, f"{metric}: pairwise contrasts (95% CI; Holm–Šidák p in comparison.json)"))
        for cand, w in (r.get("head_to_head") or {}).items():
            wins.append({"metric": metric, "candidate": cand, "wlt": f"{w['wins']}/{w['losses']}/{w['ties']}",
                         "rate": "—" if w["win_rate"] is None else f"{w['win_rate']:.0%}",
                         "ci": "—" if w["ci_low"] is None else f"{w['ci_low']:.0%}–{w['ci_high']:.0%}", "p": _p(w["sign_test_p"])})
        separated = set(((r.get("bradley_terry") or {}).get("_warning") or {}).get("separated", []))
        for model, s in (r.get("bradley_terry") or {}).items():
            if not model.startswith("_") and "strength" in s:
                bt.append({"metric": metric, "model": model + (" (won or lost every comparison: unbounded)" if model in separated else ""),
                           "strength": _fmt(s["strength"]), "ci": f"{_fmt(s['ci_low'])} to {_fmt(s['ci_high'])}"})
    return {"sessions": comparison["sessions"], "baseline": comparison.get("baseline"), "omnibus": omnibus,
            "forests": forests, "wins": wins, "bradley_terry": bt}


def build_report(runs: list[str | Path], out: str | Path | None = None, *, comparison: dict[str, Any] | None = None,
                 gate: dict[str, Any] | None = None) -> Path:
    """Write the HTML report for one or more stored runs (and a comparison and gate verdict, when given)."""
    if not runs:
        raise EvalkitError("report needs at least one run directory")
    loaded = [_Run(Path(r)) for r in runs]
    if gate is None and (loaded[-1].directory / "gate.json").exists():
        gate = json.loads((loaded[-1].directory / "gate.json").read_text())
    rubrics = rubrics_of(loaded)  # type: ignore[arg-type]
    info = _client_info()
    item_names = {f"{r.id}.{i.id}": i.name for r in rubrics for i in r.items}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    html = env.get_template("template.html.j2").render(
        title=" vs ".join(r.name for r in loaded), subtitle=f"{loaded[0].manifest.config.suite.id} · generated "
        f"{datetime.now():%Y-%m-%d %H:%M}", runs=[_run_header(r) for r in loaded], safety=_safety(loaded),
        safety_rule=CRITICAL_RULE, gate=_gate(gate), rubric_sections=[_rubric_section(r, loaded, info) for r in rubrics],
        comparison=_comparison(comparison, rubrics), sessions_json=_SESSIONS_SLOT, filters=_filters(loaded, info))
    target = Path(out) if out else (loaded[0].directory / "report.html" if len(loaded) == 1
                                    else loaded[0].directory.parent / f"report-{datetime.now():%Y%m%d-%H%M%S}.html")
    target.parent.mkdir(parents=True, exist_ok=True)
    head, tail = html.split(_SESSIONS_SLOT)
    partial = target.with_name(target.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:  # sessions go straight from the run files to the page
        handle.write(head + '{"items":' + _embed(item_names) + ',"sessions":')
        _write_sessions(handle, loaded, info)
        handle.write("}" + tail)
    os.replace(partial, target)
    return target
