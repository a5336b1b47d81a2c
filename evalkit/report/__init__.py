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

from evalkit.analysis.runs import judge_fitness_warning
from evalkit.analysis.summary import CRITICAL_RULE
from evalkit.content.rubrics import Rubric
from evalkit.core.errors import EvalkitError
from evalkit.core.fileio import iter_jsonl, read_text, refuse_non_file
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
            info.setdefault(p.id, {"archetype": p.archetype, "risk": p.risk_type, "problem": p.presenting_problem,
                                   "name": f"{p.name} ({p.presenting_problem})"})
        for u in run.suite.utterances:
            info.setdefault(u.id, {"archetype": u.topic, "risk": "risk cue" if u.risk else "none", "problem": u.topic,
                                   "name": f"{u.id} ({u.topic})"})
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
        from evalkit.analysis.runs import inclusion_of
        from evalkit.analysis.sessions import session_views

        # Figures count exactly the sessions the summary counts (inclusion policy; risk rubrics only where risk surfaced).
        self.analysed = {v.session_id: v.analysed() for v in session_views(
            store.iter_transcripts(), self.values, self.suite, inclusion=inclusion_of(manifest, self.suite),
            threshold=manifest.config.adherence_threshold)}

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
    if fitness := judge_fitness_warning(m, judged=run.suite.judged):
        warnings.append(fitness)
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


def _score_rows(rubric: Rubric, runs: list[_Run], supported: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Composites then items: readable name, what it is, direction of good, range, and each run's mean [CI] (n, invalid).
    A run is marked best only where a comparison showed it better than every other run (`supported`: metric -> run)."""
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
        best = (supported or {}).get(f"{rubric.id}.{score_id}") if len(runs) > 1 else None
        rows.append({"id": score_id, "metric": f"{rubric.id}.{score_id}", "name": name, "kind": kind,
                     "direction": _direction(better), "arrow": "↑" if better == "higher" else "↓",
                     "range": f"{low:g}–{high:g}", "cells": cells, "best": best, "composite": kind.startswith("composite")})
    return rows


def _goodness(value: float, rubric: Rubric, score_id: str) -> float:
    """0 (worst) .. 1 (best) on the score's own range, whichever direction is good."""
    low, high = rubric.range_of(score_id)
    position = (value - low) / (high - low) if high > low else 0.5
    return position if rubric.better(score_id) == "higher" else 1 - position


def _rubric_section(rubric: Rubric, runs: list[_Run], info: dict[str, dict[str, str]],
                    supported: dict[str, str] | None = None) -> dict[str, Any]:
    summaries = {run.name: run.summary.rubrics.get(rubric.id) for run in runs}
    section: dict[str, Any] = {"id": rubric.id, "name": rubric.name, "version": rubric.version, "heatmaps": [],
                               "rows": _score_rows(rubric, runs, supported), "source": rubric.source.strip(), "notes": rubric.notes.strip(),
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
    by_range: dict[tuple[float, float], list[int]] = defaultdict(list)
    for index, item in enumerate(rubric.items):
        scale = rubric.scale_of(item)
        by_range[(float(scale.min), float(scale.max))].append(index)
    section["items_svg"] = "".join(
        plots.dot_ci([labels[i] for i in indices], {name: [series[i] for i in indices] for name, series in item_series.items()},
                     value_range, f"{rubric.id}: item profile, items scored {value_range[0]:g}–{value_range[1]:g} "
                                  "(dot: mean; bar: 95% CI; ↑ higher / ↓ lower is better)")
        for value_range, indices in by_range.items())
    for run in runs[-MAX_HEATMAPS:]:
        per_persona: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for sid, values in run.analysed.items():
            source = run.sources.get(sid, sid)
            for item in rubric.items:
                value = values.get(f"{rubric.id}.{item.id}")
                if value is not None:
                    per_persona[source][item.id].append(value)
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
    """A score per session the summary counts (not excluded; for risk rubrics, only where the risk surfaced)."""
    metric = f"{rubric.id}.{score_id}"
    return [values[metric] for values in run.analysed.values() if metric in values]


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
            entry = {"run": run.name, "id": t.session_id, "key": t.key, "persona": t.source_id, "name": about.get("name", t.source_id),
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
    """JSON for a <script type="application/json"> element. Every "<", ">" and "&" is written as its \\u escape (the
    same JSON): "</script" would end the element early, and "<!--" with "<script" would make the parser look for a
    second closing tag, swallowing the rest of the page."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _safety(runs: list[_Run]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        for rubric_id, rs in run.summary.rubrics.items():
            c = rs.critical_failures
            if c and c.risk_sessions:
                share = "—" if c.share is None else f"{c.share:.0%} ({c.ci_low:.0%}–{c.ci_high:.0%})"  # clustered by persona
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
                        "upper_bound": _fmt(d.get("upper_bound"), 3), "margin": r.get("margin", "—"),
                        "floor": _fmt(r.get("scoring_floor"), 3), "needed": d.get("personas_needed", "—"),
                        "reason": r.get("reason", "")})
    for rubric, c in (gate.get("critical") or {}).items():
        metrics.append({"metric": f"{rubric}.critical_failures", "verdict": c["verdict"], "css": css[c["verdict"]],
                        "n": c.get("sessions"), "personas": "—", "mean_drop": "—", "upper_bound": "—", "margin": "—",
                        "floor": "—", "needed": "—", "reason": c.get("reason", "")})
    return {"verdict": gate["verdict"], "css": css[gate["verdict"]], "reason": gate["reason"], "metrics": metrics,
            "warnings": gate.get("warnings") or []}


def _supported_best(comparison: dict[str, Any] | None) -> dict[str, str]:
    """metric -> the run the comparison showed better than every other one (family-adjusted p < alpha)."""
    if not comparison:
        return {}
    return {m: r["best"] for m, r in comparison["metrics"].items() if r.get("best")}


def _comparison(comparison: dict[str, Any] | None, rubrics: list[Rubric]) -> dict[str, Any] | None:
    if not comparison:
        return None
    conditions = list(comparison["runs"])
    names = {f"{r.id}.{i.id}": i.name for r in rubrics for i in r.items} | {f"{r.id}.{c.id}": c.name for r in rubrics for c in r.composites}
    families: dict[str, list[dict[str, Any]]] = {"primary": [], "exploratory": []}
    forests, wins, bt = [], [], []
    for metric, r in comparison["metrics"].items():
        mm, fr = r.get("mixed_model") or {}, r.get("friedman") or {}
        emms = mm.get("emms") or {}
        family = r.get("family", "exploratory")
        means = []
        for c in conditions:
            e = emms.get(c) or {}
            mean = e.get("mean") if emms else r["means"].get(c)
            ci = f" [{e['ci_low']:.2f}, {e['ci_high']:.2f}]" if e and family == "primary" else ""
            means.append({"text": _fmt(mean) + ci, "best": r.get("best") == c})
        families[family].append({
            "metric": metric, "name": r.get("name") or names.get(metric, metric), "arrow": "↑" if r["better"] == "higher" else "↓",
            "means": means, "verdict": r.get("verdict") or r.get("mixed_model_error") or "—",
            "f": f"{mm['f_statistic']:.2f} ({mm['df']}, {mm['df_denominator']:.0f})" if mm else "not estimable",
            "p": _p(r.get("p_value")), "p_adjusted": _p(r.get("p_adjusted")), "friedman_p": _p(fr.get("p_value")),
            "icc": _fmt(mm.get("icc"))})
        if family == "primary" and mm.get("contrasts"):
            rows = [(f"{c['a']} − {c['b']} (adj. p {_p(c.get('p_adjusted'))})", c["estimate"], c["ci_low"], c["ci_high"])
                    for c in mm["contrasts"]]
            forests.append(plots.forest(rows, f"{metric}: pairwise contrasts, 95% CI (unadjusted); Holm-adjusted p over the "
                                              "primary family"))
        for cand, w in (r.get("head_to_head") or {}).items():
            wins.append({"metric": metric, "family": family, "candidate": cand, "wlt": f"{w['wins']}/{w['losses']}/{w['ties']}",
                         "sessions": f"{w.get('session_wins')}/{w.get('session_losses')}/{w.get('session_ties')}",
                         "rate": "—" if w["win_rate"] is None else f"{w['win_rate']:.0%}",
                         "ci": "—" if w["ci_low"] is None else f"{w['ci_low']:.0%}–{w['ci_high']:.0%}", "p": _p(w["sign_test_p"]),
                         "p_adjusted": _p(w.get("p_adjusted"))})
        fit = r.get("bradley_terry")
        if fit is not None:
            if fit.get("absent_reason"):
                bt.append({"metric": metric, "model": "—", "strength": "not estimated", "ci": fit["absent_reason"]})
            else:
                ranked = sorted(fit["strengths"].items(), key=lambda kv: -(kv[1]["strength"] or 0.0))
                for model, st in ranked:
                    bt.append({"metric": metric, "model": model, "strength": _fmt(st["strength"]),
                               "ci": "—" if st.get("ci_low") is None else f"{_fmt(st['ci_low'])} to {_fmt(st['ci_high'])}"})
    pairwise = []
    for cand, w in ((comparison.get("pairwise_judge") or {}).get("per_candidate") or {}).items():
        pairwise.append({"candidate": cand, "wlt": f"{w['wins']}/{w['losses']}/{w['ties']}",
                         "rate": "—" if w["win_rate"] is None else f"{w['win_rate']:.0%}", "invalid": w.get("invalid") or 0})
    return {"sessions": comparison["sessions"], "personas": comparison.get("personas"), "baseline": comparison.get("baseline"),
            "conditions": conditions, "primary": families["primary"], "exploratory": families["exploratory"],
            "alpha": comparison.get("alpha", 0.05), "families": comparison.get("families", ""),
            "forests": forests, "wins": wins, "bradley_terry": bt, "pairwise": pairwise,
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
        safety_rule=CRITICAL_RULE, gate=_gate(gate),
        rubric_sections=[_rubric_section(r, loaded, info, _supported_best(comparison)) for r in rubrics],
        leaderboard=_leaderboard(loaded, rubrics), comparison=_comparison(comparison, rubrics), sessions_json=_SESSIONS_SLOT,
        filters=_filters(loaded, info), several=len(loaded) > 1)
    target = Path(out) if out else (loaded[0].directory / "report.html" if len(loaded) == 1
                                    else loaded[0].directory.parent / f"report-{datetime.now():%Y%m%d-%H%M%S}.html")
    refuse_non_file(target, "out")  # a report replaces an older report, never a folder, FIFO or device of the user's
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
