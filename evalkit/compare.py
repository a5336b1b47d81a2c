"""`evalkit compare`: statistics across stored runs, and win rates against a baseline run."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from rich.markup import escape
from rich.table import Table

from .errors import ConfigError, EvalkitError
from .judging.pairwise import PairwiseVerdict, judge_pair, pair_outcome
from .progress import console
from .roles import RoleSpec, judge_backend
from .simulation.engine import run_bounded
from .statistics.data import Run, incompatibilities, load_run, metric_better, rubrics_of, session_table
from .statistics.mixed import fit_mixed_model
from .statistics.nonparametric import effect_sizes, friedman, kruskal_wallis, rating_counts_chi2
from .statistics.winrate import (
    bradley_terry_bootstrap,
    head_to_head,
    length_controlled_win_rate,
    pairwise_outcomes,
    win_summary,
)


class Comparison(BaseModel):
    model_config = ConfigDict(extra="forbid")

    created_at: datetime
    runs: dict[str, str]
    baseline: str | None
    suite: str
    sessions: int
    matched_only: bool
    excluded_flagged: dict[str, int] | None = None
    metrics: dict[str, dict[str, Any]]
    pairwise_judge: dict[str, Any] | None = None
    warnings: list[str] = []


def _check_sessions(table: pd.DataFrame, conditions: list[str], matched: bool) -> tuple[pd.DataFrame, list[str]]:
    have = {c: set(table.loc[table["condition"] == c, "session"]) for c in conditions}
    shared = set.intersection(*have.values())
    missing = {c: sorted(set.union(*have.values()) - s) for c, s in have.items()}
    if not any(missing.values()):
        return table, []
    summary = "; ".join(f"{c} lacks {len(m)} ({', '.join(m[:3])}{', ...' if len(m) > 3 else ''})"
                        for c, m in missing.items() if m)
    if not matched:
        raise EvalkitError(f"runs do not hold the same sessions: {summary}; pass --matched to analyse the "
                           f"{len(shared)} sessions they share")
    return table[table["session"].isin(shared)], [f"analysed the {len(shared)} shared sessions only: {summary}"]


def analyse_metric(metric: str, data: pd.DataFrame, ratings: pd.DataFrame | None, conditions: list[str],
                   baseline: str | None, better: str, *, bootstrap_rounds: int, seed: int) -> dict[str, Any]:
    valid = data.dropna(subset=["value"])
    out: dict[str, Any] = {"better": better, "n": {c: int((valid["condition"] == c).sum()) for c in conditions},
                           "invalid": {c: int(data.loc[data["condition"] == c, "value"].isna().sum()) for c in conditions}}
    if len(conditions) >= 2 and valid["persona"].nunique() >= 2 and valid["value"].nunique() > 1:
        try:
            out["mixed_model"] = vars(fit_mixed_model(valid, conditions))
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            out["mixed_model"] = {"error": f"the mixed model could not be fitted: {exc}"}
    out["friedman"] = friedman(valid, conditions)
    out["kruskal_wallis"] = kruskal_wallis(valid, conditions)
    out["rating_chi2"] = rating_counts_chi2(ratings, conditions) if ratings is not None else None
    out["effect_sizes"] = effect_sizes(valid, conditions)
    if baseline:
        series = {c: valid[valid["condition"] == c].set_index("session")["value"] for c in conditions}
        out["head_to_head"] = {c: head_to_head(series[c], series[baseline], better) for c in conditions if c != baseline}
    if len(conditions) > 2 and bootstrap_rounds > 0:
        outcomes = pairwise_outcomes(valid, conditions, better)
        if outcomes["winner"].nunique() >= 2:
            try:
                out["bradley_terry"] = bradley_terry_bootstrap(outcomes, conditions, rounds=bootstrap_rounds, seed=seed)
            except Exception as exc:  # noqa: BLE001 - separation etc.: reported, not fatal
                out["bradley_terry"] = {"error": f"Bradley-Terry could not be fitted: {exc}"}
    return out


def _lengths(run: Run) -> dict[str, int]:
    return {f"{t.source_id}#{t.replicate}": sum(len(x.content) for x in t.turns if x.role == "therapist")
            for t in run.transcripts.values()}


async def _pairwise(runs: dict[str, Run], baseline: str, judge: RoleSpec, sessions: set[str], out_dir: Path,
                    concurrency: int) -> dict[str, Any]:
    rubric = rubrics_of(list(runs.values()))[0]
    keyed = {name: {f"{t.source_id}#{t.replicate}": t for t in run.transcripts.values()} for name, run in runs.items()}
    verdicts: list[PairwiseVerdict] = []
    async with judge_backend(judge, out_dir) as (backend, _):
        jobs = [(name, s) for name in runs if name != baseline for s in sorted(sessions)
                if s in keyed[name] and s in keyed[baseline]]

        async def work(job):
            name, s = job
            return await judge_pair(backend, rubric, s, (name, keyed[name][s]), (baseline, keyed[baseline][s]))

        await run_bounded(jobs, work, concurrency=concurrency, on_result=lambda job, rows: verdicts.extend(rows))
    path = out_dir / "pairwise.jsonl"
    path.write_text("".join(v.model_dump_json() + "\n" for v in verdicts))
    results: dict[str, Any] = {"judge": backend.info.model, "verdicts_file": str(path), "per_candidate": {}}
    lengths = {name: _lengths(run) for name, run in runs.items()}
    for name in runs:
        if name == baseline:
            continue
        by_session: dict[str, list[PairwiseVerdict]] = {}
        for v in verdicts:
            if v.candidate == name:
                by_session.setdefault(v.session, []).append(v)
        outcomes = {s: pair_outcome(vs) for s, vs in by_session.items()}
        counted = [o for o in outcomes.values() if o is not None]
        summary = win_summary(counted.count("win"), counted.count("loss"), counted.count("tie"))
        summary["invalid"] = sum(o is None for o in outcomes.values())
        decided = [(s, o) for s, o in outcomes.items() if o in ("win", "loss")]
        summary["length_controlled"] = length_controlled_win_rate(
            np.array([o == "win" for _, o in decided], float),
            np.array([lengths[name][s] - lengths[baseline][s] for s, _ in decided], float))
        results["per_candidate"][name] = summary
    return results


def compare(runs: list[str | Path], *, baseline: str | Path | None = None, metrics: list[str] | None = None,
            matched: bool = False, exclude_flagged: bool = False, out: str | Path | None = None,
            pairwise_judge: RoleSpec | None = None,
            bootstrap_rounds: int = 1000, seed: int = 0, concurrency: int = 32, show: bool = True) -> Comparison:
    """Compare stored runs (conditions); with `baseline`, also win rates of every other run against it."""
    paths = [Path(r) for r in runs]
    if baseline is not None and Path(baseline) not in paths:
        paths.append(Path(baseline))
    if len(paths) < 2:
        raise ConfigError("compare needs at least two runs (or one run and --baseline)")
    if pairwise_judge is not None and baseline is None:
        raise ConfigError("--pairwise-judge-* needs --baseline: pairs are each run against the baseline")
    loaded = [load_run(p) for p in paths]
    problems = incompatibilities(loaded)
    if problems:
        raise EvalkitError(f"runs are not comparable: {'; '.join(problems)}")
    conditions = [r.name for r in loaded]
    base_name = Path(baseline).name if baseline is not None else None
    rubrics = rubrics_of(loaded)
    table = session_table(loaded, rubrics, exclude_flagged=exclude_flagged)
    table, warnings = _check_sessions(table, conditions, matched)
    known = sorted(table["metric"].unique())
    chosen = metrics or known
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise ConfigError(f"--metric {unknown[0]}: not a metric of these runs (e.g. {', '.join(known[:4])}, ...)")
    judges = {r.manifest.roles["judge"].model_hash or r.manifest.roles["judge"].model for r in loaded}
    if len(judges) > 1:
        warnings.append("the runs were judged by different judges; differences mix model and judge effects")

    # The judge's item ratings, for exactly the sessions the analysis keeps (matched, not excluded).
    ratings = pd.concat([r.scores.assign(condition=r.name) for r in loaded], ignore_index=True)
    ratings["metric"] = ratings["rubric"] + "." + ratings["item"]
    kept = set(zip(table["condition"], table["session"], strict=True))
    ratings = ratings[[(c, s) in kept for c, s in zip(ratings["condition"], ratings["session_id"], strict=True)]]
    sessions = set(table["session"])
    composites = {f"{r.id}.{c.id}" for r in rubrics for c in r.composites}
    results = {}
    for metric in chosen:
        data = table[table["metric"] == metric]
        item_ratings = ratings[(ratings["metric"] == metric) & ratings["rating"].notna()] if metric not in composites else None
        results[metric] = analyse_metric(metric, data, item_ratings, conditions, base_name, metric_better(rubrics, metric),
                                         bootstrap_rounds=bootstrap_rounds if metric in composites else 0, seed=seed)
    out_dir = Path(out) if out else paths[0].parent / f"comparison-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    pairwise = None
    if pairwise_judge is not None and base_name is not None:
        pairwise = asyncio.run(_pairwise({r.name: r for r in loaded}, base_name, pairwise_judge, sessions, out_dir, concurrency))
    comparison = Comparison(created_at=datetime.now(timezone.utc), runs={r.name: str(r.directory) for r in loaded},
                            baseline=base_name, suite=loaded[0].manifest.config.suite.id, sessions=len(sessions),
                            matched_only=matched, metrics=results,
                            excluded_flagged={r.name: len(r.flagged) for r in loaded} if exclude_flagged else None,
                            pairwise_judge=pairwise, warnings=warnings)
    (out_dir / "comparison.json").write_text(json.dumps(json.loads(comparison.model_dump_json()), indent=2, allow_nan=True))
    write_csvs(comparison, out_dir)
    from .report import build_report

    build_report(paths, out_dir / "report.html", comparison=json.loads(comparison.model_dump_json()))
    if show:
        print_comparison(comparison, out_dir)
    return comparison


def write_csvs(comparison: Comparison, out_dir: Path) -> None:
    omnibus, contrasts, emms, wins = [], [], [], []
    for metric, r in comparison.metrics.items():
        mm = r.get("mixed_model") or {}
        omnibus.append({"metric": metric, "wald_chi2": mm.get("wald_chi2"), "df": mm.get("df"), "p": mm.get("p_value"),
                        "icc": mm.get("icc"), "r2_marginal": mm.get("r2_marginal"), "r2_conditional": mm.get("r2_conditional"),
                        "friedman_chi2": (r["friedman"] or {}).get("chi2"), "friedman_p": (r["friedman"] or {}).get("p_value"),
                        "kruskal_h": (r["kruskal_wallis"] or {}).get("h"), "kruskal_p": (r["kruskal_wallis"] or {}).get("p_value"),
                        "rating_chi2": (r["rating_chi2"] or {}).get("chi2"), "rating_chi2_p": (r["rating_chi2"] or {}).get("p_value")})
        contrasts += [{"metric": metric, **c} for c in mm.get("contrasts", [])]
        emms += [{"metric": metric, "condition": c, **v} for c, v in mm.get("emms", {}).items()]
        wins += [{"metric": metric, "candidate": c, **{k: v for k, v in w.items()}} for c, w in (r.get("head_to_head") or {}).items()]
    for name, rows in (("omnibus", omnibus), ("contrasts", contrasts), ("emms", emms), ("win_rates", wins)):
        pd.DataFrame(rows).to_csv(out_dir / f"{name}.csv", index=False)


def _p(value: float | None) -> str:
    return "—" if value is None else ("<.001" if value < 0.001 else f"{value:.3f}")


def print_comparison(comparison: Comparison, out_dir: Path) -> None:
    table = Table(title=f"{comparison.suite}: {len(comparison.runs)} conditions, {comparison.sessions} sessions",
                  title_justify="left")
    for column in ("metric", "Wald χ² (df)", "p", "Friedman χ²", "p", "Kruskal–Wallis H", "p", "ICC"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric, r in comparison.metrics.items():
        mm = r.get("mixed_model") or {}
        fr, kw = r.get("friedman") or {}, r.get("kruskal_wallis") or {}
        wald = f"{mm['wald_chi2']:.2f} ({mm['df']})" if "wald_chi2" in mm else "—"
        table.add_row(metric, wald, _p(mm.get("p_value")), f"{fr['chi2']:.2f}" if fr else "—", _p(fr.get("p_value")),
                      f"{kw['h']:.2f}" if kw else "—", _p(kw.get("p_value")), f"{mm['icc']:.2f}" if "icc" in mm else "—")
    console.print(table)
    if comparison.baseline:
        wins = Table(title=f"against {comparison.baseline} (per matched session; ties dropped for the rate)", title_justify="left")
        for column in ("metric", "candidate", "W/L/T", "win rate", "95% Wilson CI", "sign test p"):
            wins.add_column(column)
        for metric, r in comparison.metrics.items():
            for cand, w in (r.get("head_to_head") or {}).items():
                rate = "—" if w["win_rate"] is None else f"{w['win_rate']:.0%}"
                ci = "—" if w["ci_low"] is None else f"[{w['ci_low']:.0%}, {w['ci_high']:.0%}]"
                wins.add_row(metric, cand, f"{w['wins']}/{w['losses']}/{w['ties']}", rate, ci, _p(w["sign_test_p"]))
        console.print(wins)
    if comparison.pairwise_judge:
        for cand, w in comparison.pairwise_judge["per_candidate"].items():
            rate = "—" if w["win_rate"] is None else f"{w['win_rate']:.0%}"
            console.print(f"judge preference {escape(cand)} vs {escape(comparison.baseline or '')}: "
                          f"{w['wins']}/{w['losses']}/{w['ties']} (W/L/T, order-dependent verdicts are ties), win rate {rate}")
    for warning in comparison.warnings:
        console.print(f"[bold yellow]warning:[/bold yellow] {escape(warning)}")
    console.print(f"comparison: [bold]{escape(str(out_dir / 'comparison.json'))}[/bold] · report: "
                  f"[bold]{escape(str(out_dir / 'report.html'))}[/bold]")
