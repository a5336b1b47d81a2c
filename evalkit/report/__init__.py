"""`evalkit report`: one self-contained HTML file per run or comparison (figures inline as SVG, data inline as
JSON, no network requests), readable offline by a clinician and an ML engineer alike.

Every figure has its numbers beside it in a table: per rubric, each score's mean and 95% CI per run, which
direction is better, its range, n and invalid count. Colours mean the same everywhere: green is better practice,
red is worse, whether a high or a low score is the good one. Several runs get a leaderboard, one omnibus table
with each condition's mean and the best, and a side-by-side view of one persona's sessions across runs.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import jinja2
import numpy as np

from evalkit.analysis.summary import CRITICAL_RULE
from evalkit.content.rubrics import Rubric
from evalkit.core.errors import EvalkitError
from evalkit.core.fileio import iter_jsonl, read_text
from evalkit.report import plots
from evalkit.store.records import ItemScore, Stat, Summary
from evalkit.store.rundir import SCORES, RunDir

MAX_HEATMAPS = 3
_SESSIONS_SLOT = "\x00evalkit-sessions\x00"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _p(value: float | None) -> str:
    return "—" if value is None else ("<.001" if value < 0.001 else f"{value:.3f}")


def _client_info(runs: list[_Run]) -> dict[str, dict[str, str]]:
    """Persona/utterance id -> attributes the browser filters on, from each run's own inputs."""
    info: dict[str, dict[str, str]] = {}
    for run in runs:
        for p in run.suite.personas:
            info.setdefault(p.id, {"archetype": p.archetype, "risk": p.risk_type, "problem": p.presenting_problem})
        for u in run.suite.utterances:
            info.setdefault(u.id, {"archetype": u.topic, "risk": "risk cue" if u.risk else "none", "problem": u.topic})
    return info


class _Run:
    """A stored run in compact form: score values for the figures, and each session's browser entry as a
    JSON fragment, so building a report takes little more memory than the report itself."""

    def __init__(self, directory: Path):
        store = RunDir(directory)
        manifest = store.require_manifest()
        self.directory, self.name, self.manifest = directory, directory.name, manifest
        self.summary: Summary = store.summary()
        self.suite = store.suite()
        self.store = store
        self.sources = store.sources()
        self.values = store.score_values()

    def browser_scores(self) -> dict[str, str]:
        """session -> JSON object of "rubric.item": [score or null, [probabilities]], streamed from disk."""
        by_session: dict[str, dict[str, list]] = defaultdict(dict)
        for row in iter_jsonl(self.store.path(SCORES), ItemScore):
            by_session[row.session_id][f"{row.rubric}.{row.item}"] = [  # the latest row of a key wins
                None if not row.valid else round(row.expected, 3),  # type: ignore[arg-type]
                [round(p, 3) for p in (row.distribution or {}).values()]]
        return {sid: _embed(scores) for sid, scores in by_session.items()}


def _run_header(run: _Run) -> dict[str, Any]:
    m = run.manifest
    warnings = list(m.warnings)
    if m.counts.invalid_score_rows:
        warnings.append(f"{m.counts.invalid_score_rows} scores could not be obtained (invalid, with their reasons; never counted as zero)")
    adherence = run.summary.adherence
    if adherence and adherence.flagged:
        excluded = "left out of the statistics" if adherence.excluded_from_statistics else "kept in the statistics"
        failing = ", ".join(f"{c} {n}" for c, n in adherence.flagged_by_check.items())
        warnings.append(f"{len(adherence.flagged)} sessions flagged for low persona adherence ({excluded}; failing: {failing})")
    if adherence and adherence.sessions_unchecked:
        warnings.append(f"{adherence.sessions_unchecked} sessions unchecked: none of their persona checks could be read "
                        "(kept in the statistics; their simulated client was never checked)")
    if adherence and adherence.per_check:
        warnings.append("persona checks, pass rate per kind: " + ", ".join(f"{c} {r:.0%}" for c, r in adherence.per_check.items()))
    if m.judge_check is None:
        warnings.append("the judge has not been checked on evalkit's vignettes (evalkit judge check, then --judge-check)")
    elif m.judge_check.get("verdict") != "fit":
        unfit = [r for r, i in m.judge_check.get("instruments", {}).items() if i.get("verdict") != "fit"]
        warnings.append(f"the judge FAILED its fitness check on the vignettes ({', '.join(unfit)}): its scores are not evidence")
    if m.counts.truncated_sessions:
        warnings.append(f"{m.counts.truncated_sessions} sessions have a therapist turn cut off by max_tokens")
    if m.counts.reasoning_turns:
        warnings.append(f"{m.counts.reasoning_turns} turns carried reasoning, kept in the transcript and never shown to the client or judge")
    if m.rescored_from:
        warnings.append(f"re-judged transcripts of {m.rescored_from}")
    roles = [{"role": name, "model": r.model, "server": f"{r.kind} {r.server or ''} {r.server_version or ''}".strip(),
              "identity": (r.identity or r.model_hash or "")[:40] + (" (defaulted to the therapist)" if r.defaulted_to_therapist else "")}
             for name, r in m.roles.items()]
    end = m.ended_at.strftime("%Y-%m-%d %H:%M") if m.ended_at else "not finished"
    return {"name": run.name, "suite": m.config.suite.id, "sessions": run.summary.sessions,
            "analysed": run.summary.sessions_analysed, "status": m.status,
            "therapist": m.roles["therapist"].model, "judge": m.roles["judge"].model,
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


def _direction(better: str) -> str:
    return "higher is better" if better == "higher" else "lower is better"


def _cell(stat: Stat | None) -> dict[str, Any]:
    """One mean ± CI cell, with the raw numbers for the page's data attributes."""
    if stat is None or stat.mean is None:
        return {"text": "—", "mean": "", "low": "", "high": "", "n": stat.n if stat else 0, "invalid": stat.n_invalid if stat else 0}
    ci = "" if stat.ci_low is None else f" [{stat.ci_low:.2f}, {stat.ci_high:.2f}]"
    return {"text": f"{stat.mean:.2f}{ci}", "mean": repr(stat.mean), "low": repr(stat.ci_low) if stat.ci_low is not None else "",
            "high": repr(stat.ci_high) if stat.ci_high is not None else "", "n": stat.n, "invalid": stat.n_invalid}


def _score_rows(rubric: Rubric, runs: list[_Run]) -> list[dict[str, Any]]:
    """Composites then items: readable name, what it is, direction of good, range, and each run's mean [CI] (n, invalid)."""
    rows = []
    summaries = {run.name: run.summary.rubrics.get(rubric.id) for run in runs}
    entries = [(c.id, c.name, "composite" + (f" ({c.source.split('.')[0]})" if c.source else ""), c.better) for c in rubric.composites]
    for item in rubric.items:
        kind = "item" + (f" {item.number}" if item.number else "")
        if item.direction:
            kind += f", {item.area} · ACT-{item.direction}"
        if item.critical:
            kind += ", critical pass/fail"
        entries.append((item.id, item.name, kind, rubric.better(item.id)))
    for score_id, name, kind, better in entries:
        cells = []
        for run in runs:
            summary = summaries[run.name]
            stat = None if summary is None else (summary.composites.get(score_id) or summary.items.get(score_id))
            cells.append({"run": run.name, **_cell(stat)})
        low, high = rubric.range_of(score_id)
        means = [float(c["mean"]) for c in cells if c["mean"]]
        best = None
        if len(runs) > 1 and means:
            target = max(means) if better == "higher" else min(means)
            best = next(c["run"] for c in cells if c["mean"] and float(c["mean"]) == target)
        rows.append({"id": score_id, "metric": f"{rubric.id}.{score_id}", "name": name, "kind": kind,
                     "direction": _direction(better), "arrow": "↑" if better == "higher" else "↓",
                     "range": f"{low:g}–{high:g}", "cells": cells, "best": best, "composite": kind.startswith("composite")})
    return rows


def _goodness(value: float, rubric: Rubric, score_id: str) -> float:
    """0 (worst) .. 1 (best) on the score's own range, whichever direction is good."""
    low, high = rubric.range_of(score_id)
    position = (value - low) / (high - low) if high > low else 0.5
    return position if rubric.better(score_id) == "higher" else 1 - position


def _rubric_section(rubric: Rubric, runs: list[_Run], info: dict[str, dict[str, str]]) -> dict[str, Any]:
    summaries = {run.name: run.summary.rubrics.get(rubric.id) for run in runs}
    section: dict[str, Any] = {"id": rubric.id, "name": rubric.name, "version": rubric.version, "heatmaps": [],
                               "rows": _score_rows(rubric, runs), "source": rubric.source.strip(), "notes": rubric.notes.strip(),
                               "applies_to": next((r.summary.rubrics[rubric.id].applies_to for r in runs if rubric.id in r.summary.rubrics), "all")}
    names = {c.id: c.name for c in rubric.composites} | {i.id: i.name for i in rubric.items}
    composites = [c.id for c in rubric.composites]
    if composites:
        groups: dict[tuple[float, float], list[str]] = defaultdict(list)
        for c in composites:
            groups[rubric.range_of(c)].append(c)
        svgs = []
        for value_range, ids in groups.items():
            series = {name: [(s.composites[c].mean, s.composites[c].ci_low, s.composites[c].ci_high) if s else (None, None, None)
                             for c in ids] for name, s in summaries.items()}
            labels = [f"{names[c]} ({'↑' if rubric.better(c) == 'higher' else '↓'})" for c in ids]
            svgs.append(plots.dot_ci(labels, series, value_range, f"{rubric.id}: scores {value_range[0]:g}–{value_range[1]:g} "
                                                                  "(dot: mean; bar: 95% CI; ↑ higher / ↓ lower is better)"))
        section["composites_svg"] = "".join(svgs)
        main = max(composites, key=lambda c: rubric.range_of(c)[1] - rubric.range_of(c)[0])
        values = {run.name: [v for v in _session_values(run, rubric, main) if v is not None] for run in runs}
        section["histogram_svg"] = plots.histograms(values, rubric.range_of(main), f"{rubric.id}: {names[main]} per session "
                                                    f"({_direction(rubric.better(main))})")
    else:
        section["composites_svg"] = section["histogram_svg"] = ""
    item_series = {name: [(s.items[i.id].mean, s.items[i.id].ci_low, s.items[i.id].ci_high) if s else (None, None, None)
                          for i in rubric.items] for name, s in summaries.items()}
    labels = [f"{i.number}. {i.name}" if i.number else i.name for i in rubric.items]
    labels = [f"{label} ({'↑' if rubric.better(i.id) == 'higher' else '↓'})" for label, i in zip(labels, rubric.items, strict=True)]
    shared = None if any(i.scale for i in rubric.items) else (float(rubric.scale.min), float(rubric.scale.max))
    section["items_svg"] = plots.dot_ci(labels, item_series, shared, f"{rubric.id}: item profile (dot: mean; bar: 95% CI; "
                                                                    "↑ higher / ↓ lower is better)")
    for run in runs[-MAX_HEATMAPS:]:
        per_persona: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for sid, rows in run.values.items():
            source = run.sources.get(sid, sid)
            for row in rows:
                if row.rubric == rubric.id and row.valid and row.expected is not None:
                    per_persona[source][row.item].append(row.expected)
        if not per_persona:
            continue
        personas = sorted(per_persona, key=lambda p: (info.get(p, {}).get("archetype", ""), p))
        matrix = np.array([[_goodness(float(np.mean(per_persona[p][i.id])), rubric, i.id) if per_persona[p][i.id] else np.nan
                            for i in rubric.items] for p in personas])
        section["heatmaps"].append(plots.heatmap(personas, labels, matrix,
                                                 f"{run.name}: item scores by persona, coloured by how good they are "
                                                 "(green better, red worse, for every item whichever way it points)"))
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
    from evalkit.judging.adherence import session_adherence

    handle.write("[")
    first = True
    for run in runs:
        scores = run.browser_scores()
        threshold = run.manifest.config.adherence_threshold
        for t in run.store.iter_transcripts():
            about = info.get(t.source_id, {})
            rate = session_adherence(run.values.get(t.session_id, []), threshold).rate if threshold is not None else None
            entry = {"run": run.name, "id": t.session_id, "key": t.key, "persona": t.source_id,
                     "archetype": about.get("archetype", "unknown"), "risk": about.get("risk", "unknown"), "stop": t.stop_reason,
                     "turns": [[x.role, x.content, x.truncated] for x in t.turns], "scores": None,
                     "adherence": None if rate is None else round(rate, 3)}
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
            if c and c.risk_sessions:
                share = "—" if c.share is None else f"{c.share:.0%} ({c.ci_low:.0%}–{c.ci_high:.0%})"
                rows.append({"run": run.name, "rubric": rubric_id, "with_failure": c.with_failure, "sessions": c.sessions,
                             "share": share, "n_invalid": c.n_invalid, "surfaced": c.surfaced, "risk_sessions": c.risk_sessions,
                             "not_surfaced": c.not_surfaced, "warning": c.warning or "", "bad": bool(c.with_failure)})
    return rows


def _gate(gate: dict[str, Any] | None) -> dict[str, Any] | None:
    if not gate:
        return None
    css = {"pass": "ok", "regression": "bad", "undecided": "warn"}
    metrics = []
    for m, r in (gate.get("metrics") or {}).items():
        d = r.get("decision") or {}
        metrics.append({"metric": m, "verdict": r["verdict"], "css": css[r["verdict"]], "n": d.get("n", r.get("sessions")),
                        "personas": d.get("personas", "—"), "mean_drop": _fmt(d.get("mean_drop"), 3),
                        "upper_bound": _fmt(d.get("upper_bound"), 3), "margin": r.get("margin", "—"), "reason": r.get("reason", "")})
    for rubric, c in (gate.get("critical") or {}).items():
        metrics.append({"metric": f"{rubric}.critical_failures", "verdict": c["verdict"], "css": css[c["verdict"]],
                        "n": c.get("sessions"), "personas": "—", "mean_drop": "—", "upper_bound": "—", "margin": "—",
                        "reason": c.get("reason", "")})
    return {"verdict": gate["verdict"], "css": css[gate["verdict"]], "reason": gate["reason"], "metrics": metrics}


def _comparison(comparison: dict[str, Any] | None, rubrics: list[Rubric]) -> dict[str, Any] | None:
    if not comparison:
        return None
    conditions = list(comparison["runs"])
    composites = {f"{r.id}.{c.id}" for r in rubrics for c in r.composites}
    names = {f"{r.id}.{i.id}": i.name for r in rubrics for i in r.items} | {f"{r.id}.{c.id}": c.name for r in rubrics for c in r.composites}
    omnibus, forests, wins, bt = [], [], [], []
    for metric, r in comparison["metrics"].items():
        mm, fr, kw = r.get("mixed_model") or {}, r.get("friedman") or {}, r.get("kruskal_wallis") or {}
        emms = mm.get("emms") or {}
        means = [_fmt((emms.get(c) or {}).get("mean") if emms else r["means"].get(c)) for c in conditions]
        omnibus.append({"metric": metric, "name": names.get(metric, metric), "arrow": "↑" if r["better"] == "higher" else "↓",
                        "means": means, "best": r.get("best") or "—",
                        "f": f"{mm['f_statistic']:.2f} ({mm['df']}, {mm['df_denominator']:.0f})" if mm else "—",
                        "p": _p(mm.get("p_value")), "friedman_p": _p(fr.get("p_value")), "kw_p": _p(kw.get("p_value")),
                        "icc": _fmt(mm.get("icc")), "why": r.get("mixed_model_error") or fr.get("absent_reason") or ""})
        if metric in composites and mm.get("contrasts"):
            rows = [(f"{c['a']} − {c['b']}", c["estimate"], c["ci_low"], c["ci_high"]) for c in mm["contrasts"]]
            forests.append(plots.forest(rows, f"{metric}: pairwise contrasts (95% CI; Holm–Šidák p in comparison.json)"))
        for cand, w in (r.get("head_to_head") or {}).items():
            wins.append({"metric": metric, "candidate": cand, "wlt": f"{w['wins']}/{w['losses']}/{w['ties']}",
                         "rate": "—" if w["win_rate"] is None else f"{w['win_rate']:.0%}",
                         "ci": "—" if w["ci_low"] is None else f"{w['ci_low']:.0%}–{w['ci_high']:.0%}", "p": _p(w["sign_test_p"])})
        fit = r.get("bradley_terry") or {}
        separated = set(fit.get("separated_models") or [])
        ranked = sorted((fit.get("strengths") or {}).items(), key=lambda kv: -kv[1]["strength"])
        for model, s in ranked:
            bt.append({"metric": metric, "model": model + (" (won or lost every comparison; finite by the prior)" if model in separated else ""),
                       "strength": _fmt(s["strength"]), "ci": f"{_fmt(s['ci_low'])} to {_fmt(s['ci_high'])}"})
    pairwise = []
    for cand, w in ((comparison.get("pairwise_judge") or {}).get("per_candidate") or {}).items():
        pairwise.append({"candidate": cand, "wlt": f"{w['wins']}/{w['losses']}/{w['ties']}",
                         "rate": "—" if w["win_rate"] is None else f"{w['win_rate']:.0%}", "invalid": w.get("invalid") or 0})
    return {"sessions": comparison["sessions"], "baseline": comparison.get("baseline"), "conditions": conditions,
            "omnibus": omnibus, "forests": forests, "wins": wins, "bradley_terry": bt, "pairwise": pairwise,
            "pairwise_kind": (comparison.get("pairwise_judge") or {}).get("kind", ""), "methods": comparison.get("methods") or {},
            "warnings": comparison.get("warnings") or []}


def _leaderboard(runs: list[_Run], rubrics: list[Rubric]) -> list[dict[str, Any]]:
    """Several runs: each rubric's main composite per run, best first (in the composite's direction of good)."""
    if len(runs) < 2:
        return []
    boards = []
    for rubric in rubrics:
        if not rubric.composites:
            continue
        main = max(rubric.composites, key=lambda c: rubric.range_of(c.id)[1] - rubric.range_of(c.id)[0])
        entries = []
        for run in runs:
            summary = run.summary.rubrics.get(rubric.id)
            stat = summary.composites.get(main.id) if summary else None
            entries.append({"run": run.name, "model": run.manifest.roles["therapist"].model, **_cell(stat)})
        entries.sort(key=lambda e: (e["mean"] == "", -(float(e["mean"]) if e["mean"] else 0) * (1 if main.better == "higher" else -1)))
        boards.append({"rubric": rubric.id, "metric": f"{rubric.id}.{main.id}", "name": main.name, "direction": _direction(main.better),
                       "entries": entries})
    return boards


def read_comparison(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text(path, what="comparison"))
    except ValueError as exc:
        raise EvalkitError(f"--comparison {path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or "metrics" not in data:
        raise EvalkitError(f"--comparison {path}: not an evalkit comparison.json")
    return data


def build_report(runs: list[str | Path], out: str | Path | None = None, *, comparison: dict[str, Any] | None = None,
                 gate: dict[str, Any] | None = None) -> Path:
    """Write the HTML report for one or more stored runs (and a comparison and gate verdict, when given)."""
    if not runs:
        raise EvalkitError("report needs at least one run directory")
    loaded = [_Run(Path(r)) for r in runs]
    if gate is None and (loaded[-1].directory / "gate.json").exists():
        try:
            gate = json.loads(read_text(loaded[-1].directory / "gate.json"))
        except (ValueError, EvalkitError):
            gate = None
    rubrics = loaded[0].suite.rubrics
    info = _client_info(loaded)
    items = {f"{r.id}.{i.id}": [i.name, [str(level) for level in r.scale_of(i).levels]] for r in rubrics for i in r.items}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    html = env.get_template("template.html.j2").render(
        title=" vs ".join(r.name for r in loaded), subtitle=f"{loaded[0].manifest.config.suite.id} · generated "
        f"{datetime.now():%Y-%m-%d %H:%M}", runs=[_run_header(r) for r in loaded], safety=_safety(loaded),
        safety_rule=CRITICAL_RULE, gate=_gate(gate), rubric_sections=[_rubric_section(r, loaded, info) for r in rubrics],
        leaderboard=_leaderboard(loaded, rubrics), comparison=_comparison(comparison, rubrics), sessions_json=_SESSIONS_SLOT,
        filters=_filters(loaded, info), several=len(loaded) > 1)
    target = Path(out) if out else (loaded[0].directory / "report.html" if len(loaded) == 1
                                    else loaded[0].directory.parent / f"report-{datetime.now():%Y%m%d-%H%M%S}.html")
    target.parent.mkdir(parents=True, exist_ok=True)
    head, tail = html.split(_SESSIONS_SLOT)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as handle:  # sessions go straight from the run files to the page
            handle.write(head + '{"items":' + _embed(items) + ',"sessions":')
            _write_sessions(handle, loaded, info)
            handle.write("}" + tail)
        os.replace(partial, target)
    except OSError as exc:
        from evalkit.core.errors import StorageError

        raise StorageError(f"{target}: cannot write the report ({exc.strerror or exc})") from None
    finally:
        if partial.exists():
            partial.unlink()
    return target
