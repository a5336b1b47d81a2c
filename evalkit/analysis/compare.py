"""`evalkit compare`: statistics across stored runs, and win rates against a baseline run.

Library only: `compare_async` / `compare` read the runs, analyse every metric and write comparison.json,
CSV and Parquet tables and the HTML report; they return a typed `Comparison`. Printing is the CLI's.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from evalkit.analysis.runs import Run, incompatibilities, load_run, metric_better, metric_rows, rubrics_of
from evalkit.backends.roles import RoleConfig, RoleSpec, judge_backend
from evalkit.core.concurrency import run_bounded
from evalkit.core.errors import ConfigError, EvalkitError
from evalkit.core.fileio import ensure_directory, write_atomic, write_table
from evalkit.judging.pairwise import PairwiseVerdict, judge_pair, pair_outcome
from evalkit.statistics.mixed import fit_mixed_model
from evalkit.statistics.nonparametric import effect_sizes, friedman, kruskal_wallis, rating_counts_chi2
from evalkit.statistics.results import (
    BradleyTerryResult,
    EffectSize,
    FriedmanResult,
    HeadToHead,
    KruskalWallisResult,
    MixedModelResult,
    RatingChi2Result,
    WinSummary,
)
from evalkit.statistics.winrate import bradley_terry_bootstrap, head_to_head, length_controlled_win_rate, pairwise_outcomes, win_summary


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricAnalysis(_Model):
    """Everything `compare` computes for one metric (an item, an area sum or a total)."""

    metric: str
    better: str
    n: dict[str, int]
    invalid: dict[str, int]
    means: dict[str, float | None]
    best: str | None = None
    mixed_model: MixedModelResult | None = None
    mixed_model_error: str | None = None
    friedman: FriedmanResult
    kruskal_wallis: KruskalWallisResult
    rating_chi2: RatingChi2Result | None = None
    effect_sizes: list[EffectSize] = []
    head_to_head: dict[str, HeadToHead] = {}
    bradley_terry: BradleyTerryResult | None = None
    bradley_terry_error: str | None = None


class PairwiseJudgement(_Model):
    judge: str
    kind: str
    verdicts_file: str
    per_candidate: dict[str, WinSummary]


class ReferenceContrast(_Model):
    """Reference suites: corpus metrics of one run against another on the same items, by paired bootstrap."""

    a: str
    b: str
    metrics: dict[str, Any]


class Comparison(_Model):
    created_at: datetime
    runs: dict[str, str]
    baseline: str | None
    suite: str
    sessions: int
    matched_only: bool
    include_flagged: bool
    flagged: dict[str, int]
    metrics: dict[str, MetricAnalysis]
    pairwise_judge: PairwiseJudgement | None = None
    reference: list[ReferenceContrast] = []
    warnings: list[str] = []
    methods: dict[str, str] = {}


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
                   baseline: str | None, better: str, *, bootstrap_rounds: int, seed: int) -> MetricAnalysis:
    valid = data.dropna(subset=["value"])
    means = {c: (float(v.mean()) if len(v := valid.loc[valid["condition"] == c, "value"]) else None) for c in conditions}
    analysis = MetricAnalysis(
        metric=metric, better=better, n={c: int((valid["condition"] == c).sum()) for c in conditions},
        invalid={c: int(data.loc[data["condition"] == c, "value"].isna().sum()) for c in conditions}, means=means,
        friedman=friedman(valid, conditions), kruskal_wallis=kruskal_wallis(valid, conditions),
        rating_chi2=rating_counts_chi2(ratings, conditions) if ratings is not None else None,
        effect_sizes=effect_sizes(valid, conditions))
    if len(conditions) >= 2 and valid["persona"].nunique() >= 2 and valid["value"].nunique() > 1:
        try:
            analysis.mixed_model = fit_mixed_model(valid, conditions)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            analysis.mixed_model_error = f"the mixed model could not be fitted: {exc}"
    elif len(conditions) >= 2:
        analysis.mixed_model_error = "too few personas or no variation in the scores"
    estimates = ({c: e.mean for c, e in analysis.mixed_model.emms.items()} if analysis.mixed_model else
                 {c: m for c, m in means.items() if m is not None})
    if estimates:
        analysis.best = (max if better == "higher" else min)(estimates, key=estimates.get)
    if baseline:
        series = {c: valid[valid["condition"] == c].set_index("session")["value"] for c in conditions}
        analysis.head_to_head = {c: head_to_head(series[c], series[baseline], better) for c in conditions if c != baseline}
    if len(conditions) > 2 and bootstrap_rounds > 0:
        outcomes = pairwise_outcomes(valid, conditions, better)
        if outcomes["winner"].nunique() >= 2:
            try:
                analysis.bradley_terry = bradley_terry_bootstrap(outcomes, conditions, rounds=bootstrap_rounds, seed=seed)
            except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
                analysis.bradley_terry_error = f"Bradley-Terry could not be fitted: {exc}"
        else:
            analysis.bradley_terry_error = "one condition won every comparison or there were none"
    return analysis


def _lengths(run: Run) -> dict[str, int]:
    return {t.key: sum(len(x.content) for x in t.turns if x.role == "therapist") for t in run.transcripts.values()}


async def _pairwise(runs: dict[str, Run], baseline: str, judge: RoleConfig | RoleSpec | None, reward_endpoint: str | None,
                    sessions: set[str], out_dir: Path, concurrency: int) -> PairwiseJudgement:
    from evalkit.judging import Judge, JudgeSettings

    rubric = rubrics_of(list(runs.values()))[0]
    keyed = {name: {t.key: t for t in run.transcripts.values()} for name, run in runs.items()}
    verdicts: list[PairwiseVerdict] = []
    jobs = [(name, s) for name in runs if name != baseline for s in sorted(sessions) if s in keyed[name] and s in keyed[baseline]]
    if reward_endpoint is not None:
        from evalkit.backends.reward import RewardClient, RewardPairwiseJudge
        from evalkit.judging.pairwise import reward_pair

        async with RewardClient.connect(reward_endpoint) as client:
            chooser = RewardPairwiseJudge(client)
            name_of = client.info.model

            async def work(job):
                name, s = job
                return await reward_pair(chooser, s, (name, keyed[name][s]), (baseline, keyed[baseline][s]))

            await run_bounded(jobs, work, concurrency=concurrency, on_result=lambda job, rows: verdicts.extend(rows))
        kind = "reward model (vLLM): P(first better) = logistic(reward difference), both orders"
    else:
        async with judge_backend(judge, out_dir) as (backend, _):  # type: ignore[arg-type]
            scorer = Judge(backend, JudgeSettings(adherence_threshold=None), concurrency=concurrency)
            name_of = backend.info.model

            async def work(job):
                name, s = job
                return await judge_pair(scorer, rubric, s, (name, keyed[name][s]), (baseline, keyed[baseline][s]))

            await run_bounded(jobs, work, concurrency=concurrency, on_result=lambda job, rows: verdicts.extend(rows))
        kind = "LLM judge, both orders; order-dependent verdicts are ties"
    path = out_dir / "pairwise.jsonl"
    write_atomic(path, "".join(v.model_dump_json() + "\n" for v in verdicts))
    lengths = {name: _lengths(run) for name, run in runs.items()}
    per_candidate = {}
    for name in runs:
        if name == baseline:
            continue
        by_session: dict[str, list[PairwiseVerdict]] = {}
        for v in verdicts:
            if v.candidate == name:
                by_session.setdefault(v.session, []).append(v)
        outcomes = {s: pair_outcome(vs) for s, vs in by_session.items()}
        counted = [o for o in outcomes.values() if o is not None]
        decided = [(s, o) for s, o in outcomes.items() if o in ("win", "loss")]
        summary = win_summary(counted.count("win"), counted.count("loss"), counted.count("tie"))
        per_candidate[name] = summary.model_copy(update={
            "invalid": sum(o is None for o in outcomes.values()),
            "length_controlled": length_controlled_win_rate(
                np.array([o == "win" for _, o in decided], float),
                np.array([lengths[name][s] - lengths[baseline][s] for s, _ in decided], float))})
    return PairwiseJudgement(judge=name_of, kind=kind, verdicts_file=str(path), per_candidate=per_candidate)


async def compare_async(runs: list[str | Path], *, baseline: str | Path | None = None, metrics: list[str] | None = None,
                        matched: bool = False, include_flagged: bool | None = None, out: str | Path | None = None,
                        pairwise_judge: RoleConfig | RoleSpec | None = None, pairwise_reward_endpoint: str | None = None,
                        bootstrap_rounds: int = 1000, seed: int = 0, concurrency: int = 32) -> tuple[Comparison, Path]:
    """Compare stored runs (conditions); with `baseline`, also win rates of every other run against it.

    `include_flagged`: None follows each run's recorded inclusion policy. Writes comparison.json and its tables.
    """
    paths = [Path(r) for r in runs]
    if baseline is not None and Path(baseline) not in paths:
        paths.append(Path(baseline))
    if len(paths) < 2:
        raise ConfigError("compare needs at least two runs (or one run and a baseline)")
    if (pairwise_judge is not None or pairwise_reward_endpoint) and baseline is None:
        raise ConfigError("pairwise judge: needs a baseline (pairs are each run against it)")
    if bootstrap_rounds < 0:
        raise ConfigError(f"bootstrap {bootstrap_rounds}: expected 0 or more rounds")
    out_dir = Path(out) if out else paths[0].parent / f"comparison-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if out_dir.exists() and not out_dir.is_dir():  # before minutes of analysis, not after
        raise ConfigError(f"out {out_dir}: is a file, not a directory")
    loaded = [load_run(p, include_flagged=include_flagged) for p in paths]
    problems = incompatibilities(loaded)
    if problems:
        raise EvalkitError(f"runs are not comparable: {'; '.join(problems)}")
    conditions = [r.name for r in loaded]
    base_name = Path(baseline).name if baseline is not None else None
    rubrics = rubrics_of(loaded)
    table = metric_rows(loaded)
    if table.empty:
        flagged = sum(r.excluded.get("flagged", 0) for r in loaded)
        raise EvalkitError("no scored session is left to compare" + (f" ({flagged} flagged for low persona adherence are left "
                                                                     "out; --include-flagged keeps them)" if flagged else ""))
    table, warnings = _check_sessions(table, conditions, matched)
    known = sorted(table["metric"].unique())
    chosen = metrics or known
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise ConfigError(f"metric {unknown[0]}: not a metric of these runs (e.g. {', '.join(known[:4])}, ...)")
    if len({r.judge_identity for r in loaded}) > 1:
        warnings.append("the runs were judged by different judges; differences mix model and judge effects")
    # The judge's item ratings, for exactly the sessions the analysis keeps (matched, not excluded).
    ratings = pd.concat([r.scores.assign(condition=r.name) for r in loaded], ignore_index=True)
    ratings["metric"] = ratings["rubric"] + "." + ratings["item"]
    session_ids = {r.name: {t.session_id: t.key for t in r.transcripts.values()} for r in loaded}
    ratings["session"] = [session_ids[c].get(s, s) for c, s in zip(ratings["condition"], ratings["session_id"], strict=True)]
    kept = set(zip(table["condition"], table["session"], strict=True))
    ratings = ratings[[(c, s) in kept for c, s in zip(ratings["condition"], ratings["session"], strict=True)]]
    sessions = set(table["session"])
    composites = {f"{r.id}.{c.id}" for r in rubrics for c in r.composites}
    results = {}
    for metric in chosen:
        data = table[table["metric"] == metric]
        item_ratings = ratings[(ratings["metric"] == metric) & ratings["rating"].notna()] if metric not in composites else None
        results[metric] = analyse_metric(metric, data, item_ratings, conditions, base_name, metric_better(rubrics, metric),
                                         bootstrap_rounds=bootstrap_rounds if metric in composites else 0, seed=seed)
    ensure_directory(out_dir, "out")
    pairwise = None
    if (pairwise_judge is not None or pairwise_reward_endpoint) and base_name is not None:
        pairwise = await _pairwise({r.name: r for r in loaded}, base_name, pairwise_judge, pairwise_reward_endpoint,
                                   sessions, out_dir, concurrency)
    reference = _reference_contrasts(loaded, base_name, sessions, bootstrap_rounds or 1000, seed) \
        if loaded[0].suite.suite.unit == "reference" else []
    methods = {"sessions": "matched by persona and replicate across runs",
               "flagged": "; ".join(f"{r.name}: {r.inclusion.describe()}" for r in loaded),
               "safety metrics": "only sessions in which the persona's risk surfaced"}
    for analysis in results.values():
        if analysis.mixed_model:
            methods["mixed_model"] = analysis.mixed_model.method
        for name in ("friedman", "kruskal_wallis"):
            methods.setdefault(name, getattr(analysis, name).method)
        if analysis.head_to_head:
            methods.setdefault("head_to_head", next(iter(analysis.head_to_head.values())).method)
        if analysis.bradley_terry:
            methods.setdefault("bradley_terry", analysis.bradley_terry.method)
    comparison = Comparison(created_at=datetime.now(timezone.utc), runs={r.name: str(r.directory) for r in loaded},
                            baseline=base_name, suite=loaded[0].manifest.config.suite.id, sessions=len(sessions),
                            matched_only=matched, include_flagged=any(r.inclusion.include_flagged for r in loaded),
                            flagged={r.name: len(r.flagged) for r in loaded}, metrics=results, pairwise_judge=pairwise,
                            reference=reference, warnings=warnings, methods=methods)
    write_tables(comparison, out_dir)
    write_atomic(out_dir / "comparison.json", comparison.model_dump_json(indent=2))  # last: its presence marks a whole comparison
    return comparison, out_dir


def _reference_contrasts(runs: list[Run], baseline: str | None, sessions: set[str], rounds: int, seed: int) -> list[ReferenceContrast]:
    """Corpus BLEU, ROUGE and METEOR of every run against the baseline (or the first run), on the items all share."""
    from evalkit.judging.reference import reply_of
    from evalkit.metrics.reference import paired_bootstrap

    replies = {r.name: {t.key: reply_of(t) for t in r.transcripts.values()} for r in runs}
    base = baseline or runs[0].name
    suite = runs[0].suite
    out = []
    for run in runs:
        if run.name == base:
            continue
        keys = sorted(k for k in sessions if replies[run.name].get(k) is not None and replies[base].get(k) is not None)
        refs = [suite.source(k.rsplit("#", 1)[0]).reply for k in keys]  # type: ignore[union-attr]
        metrics = {m: paired_bootstrap([replies[run.name][k] for k in keys], [replies[base][k] for k in keys], refs, m,
                                       rounds=rounds, seed=seed).model_dump() for m in ("bleu", "rouge1", "rouge2", "rougeL", "meteor")}
        out.append(ReferenceContrast(a=run.name, b=base, metrics=metrics))
    return out


def compare(runs: list[str | Path], **kwargs: Any) -> tuple[Comparison, Path]:
    """`compare_async` for plain scripts (not inside a running event loop)."""
    return asyncio.run(compare_async(runs, **kwargs))


def comparison_tables(comparison: Comparison) -> dict[str, pd.DataFrame]:
    """The comparison as flat tables: omnibus, contrasts, emms, win_rates, bradley_terry."""
    omnibus, contrasts, emms, wins, bt = [], [], [], [], []
    for metric, r in comparison.metrics.items():
        mm = r.mixed_model
        omnibus.append({"metric": metric, "better": r.better, "best": r.best,
                        **{f"mean[{c}]": m for c, m in r.means.items()},
                        "wald_chi2": mm.wald_chi2 if mm else None, "df": mm.df if mm else None,
                        "f": mm.f_statistic if mm else None, "df_denominator": mm.df_denominator if mm else None,
                        "p": mm.p_value if mm else None, "icc": mm.icc if mm else None,
                        "r2_marginal": mm.r2_marginal if mm else None, "r2_conditional": mm.r2_conditional if mm else None,
                        "friedman_chi2": r.friedman.chi2, "friedman_p": r.friedman.p_value,
                        "kruskal_h": r.kruskal_wallis.h, "kruskal_p": r.kruskal_wallis.p_value,
                        "rating_chi2": r.rating_chi2.chi2 if r.rating_chi2 else None,
                        "rating_chi2_p": r.rating_chi2.p_value if r.rating_chi2 else None})
        if mm:
            contrasts += [{"metric": metric, **c.model_dump()} for c in mm.contrasts]
            emms += [{"metric": metric, **e.model_dump()} for e in mm.emms.values()]
        wins += [{"metric": metric, "candidate": c, **w.model_dump(exclude={"length_controlled"})} for c, w in r.head_to_head.items()]
        if r.bradley_terry:
            bt += [{"metric": metric, "model": m, **s.model_dump()} for m, s in r.bradley_terry.strengths.items()]
    return {"omnibus": pd.DataFrame(omnibus), "contrasts": pd.DataFrame(contrasts), "emms": pd.DataFrame(emms),
            "win_rates": pd.DataFrame(wins), "bradley_terry": pd.DataFrame(bt)}


def write_tables(comparison: Comparison, out_dir: Path) -> None:
    for name, frame in comparison_tables(comparison).items():
        write_table(out_dir / f"{name}.csv", frame)
        if len(frame.columns):
            write_table(out_dir / f"{name}.parquet", frame)
