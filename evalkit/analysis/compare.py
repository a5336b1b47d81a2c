"""`evalkit compare`: statistics across stored runs, and win rates against a baseline run.

Library only: `compare_async` / `compare` read the runs, analyse every metric and write comparison.json,
CSV and Parquet tables; they return a typed `Comparison`. Printing is the CLI's, the HTML report the pipeline's.

The persona is the unit of every test: the mixed model's clusters, Friedman's blocks, the sign test's and Bradley-
Terry's units, the rating chi-square's permutation blocks. Metrics fall in two families: the suite's declared
primary metrics, whose familywise error is controlled (Holm over the family's omnibus tests, over its pairwise
contrasts and over its sign tests), and every other metric, labelled exploratory and adjusted as its own family.
A run is called best on a metric only when every one of its contrasts favours it at adjusted p < alpha.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from evalkit.analysis.runs import (
    CRITICAL,
    Run,
    compatibility,
    known_metric,
    load_run,
    metric_better,
    metric_name,
    metric_rows,
    rubrics_of,
)
from evalkit.core.errors import ConfigError, EvalkitError
from evalkit.core.fileio import ensure_directory, write_atomic, write_table
from evalkit.statistics.mixed import NotEstimable, fit_mixed_model
from evalkit.statistics.multiplicity import holm
from evalkit.statistics.nonparametric import effect_sizes, friedman, rating_counts_chi2
from evalkit.statistics.results import (
    BradleyTerryResult,
    EffectSize,
    FriedmanResult,
    HeadToHead,
    MixedModelResult,
    RatingChi2Result,
    WinSummary,
)
from evalkit.statistics.winrate import (
    bradley_terry,
    clustered_outcomes,
    head_to_head,
    length_controlled_win_rate,
    pairwise_outcomes,
    persona_of,
)

if TYPE_CHECKING:  # the backends and the pairwise judge load only when a pairwise judge is asked for
    from evalkit.backends.roles import RoleConfig, RoleSpec

Family = Literal["primary", "exploratory"]
ALPHA = 0.05
FAMILIES = ("familywise error controlled by Holm's procedure within each family, separately over the omnibus tests, "
            "over every pairwise contrast and over every sign test against the baseline; primary: the suite's declared "
            "primary metrics (the headline results); exploratory: every other metric (read as leads, not findings)")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricAnalysis(_Model):
    """Everything `compare` computes for one metric (an item, an area sum, a total or a critical-failure share)."""

    metric: str
    name: str = ""
    better: str
    family: Family = Field("exploratory", description="primary: a declared primary metric of the suite")
    unit: str = Field("persona", description="the unit of replication of every test below")
    n: dict[str, int]
    personas: dict[str, int] = Field({}, description="personas with a valid score, per condition")
    invalid: dict[str, int]
    means: dict[str, float | None]
    p_value: float | None = Field(None, description="the mixed model's omnibus p (F test), unadjusted")
    p_adjusted: float | None = Field(None, description="p_value Holm adjusted over the metric's family")
    best: str | None = Field(None, description="the run every contrast favours at adjusted p < alpha; None when the "
                             "comparison does not single one out")
    verdict: str = Field("", description="what the comparison shows, in words")
    mixed_model: MixedModelResult | None = None
    mixed_model_error: str | None = None
    friedman: FriedmanResult
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
    personas: int = 0
    unit: str = Field("persona", description="the unit of replication of every test")
    alpha: float = ALPHA
    primary: list[str] = Field([], description="the primary family (the suite's declared primary metrics present in the runs)")
    families: str = FAMILIES
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
                   baseline: str | None, better: str, *, family: Family = "exploratory", bradley: bool = False,
                   name: str = "", seed: int = 0) -> MetricAnalysis:
    """Every test of one metric, persona as the unit; the family adjustment and the verdict come after
    (`adjust_families`)."""
    valid = data.dropna(subset=["value"])
    grouped = valid.groupby("condition", sort=False)
    counts, personas, means = grouped.size(), grouped["persona"].nunique(), grouped["value"].mean()
    missing = data["value"].isna().groupby(data["condition"], sort=False).sum()
    analysis = MetricAnalysis(
        metric=metric, name=name or metric, better=better, family=family,
        n={c: int(counts.get(c, 0)) for c in conditions}, personas={c: int(personas.get(c, 0)) for c in conditions},
        invalid={c: int(missing.get(c, 0)) for c in conditions},
        means={c: (float(means[c]) if c in means.index else None) for c in conditions},
        friedman=friedman(valid, conditions),
        rating_chi2=rating_counts_chi2(ratings, conditions, seed=seed) if ratings is not None else None,
        effect_sizes=effect_sizes(valid, conditions))
    if len(conditions) >= 2 and valid["value"].nunique() > 1:
        try:
            analysis.mixed_model = fit_mixed_model(valid, conditions)
            analysis.p_value = analysis.mixed_model.p_value
        except NotEstimable as exc:
            analysis.mixed_model_error = str(exc) if str(exc).startswith("not estimable") else f"not estimable: {exc}"
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            analysis.mixed_model_error = f"not estimable: the mixed model could not be fitted ({exc})"
    elif len(conditions) >= 2:
        analysis.mixed_model_error = ("not estimable: no valid score" if valid.empty else
                                      "not estimable: every valid score is the same, so there is nothing to compare")
    if baseline:
        wide = valid.set_index(["session", "condition"])["value"].unstack().reindex(columns=conditions)
        persona_of_session = dict(zip(valid["session"], valid["persona"].astype(str), strict=False))
        analysis.head_to_head = {c: head_to_head(wide[c], wide[baseline], better, personas=persona_of_session)
                                 for c in conditions if c != baseline}
    if bradley and len(conditions) > 2:
        outcomes = pairwise_outcomes(valid, conditions, better)
        try:
            fit = bradley_terry(outcomes, conditions)
            analysis.bradley_terry = fit
            if not fit:
                analysis.bradley_terry_error = fit.absent_reason
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            analysis.bradley_terry_error = f"Bradley-Terry could not be fitted: {exc}"
    return analysis


def _favours(contrast, better: str) -> str:
    """The condition a contrast's estimate favours."""
    higher = contrast.a if contrast.estimate > 0 else contrast.b
    lower = contrast.b if contrast.estimate > 0 else contrast.a
    return higher if better == "higher" else lower


def _p_text(p: float | None) -> str:
    return "—" if p is None else ("< .001" if p < 0.001 else f"{p:.3f}")


def _verdict(analysis: MetricAnalysis, conditions: list[str], alpha: float) -> tuple[str | None, str]:
    """(best, verdict in words) from the family-adjusted contrasts."""
    mm = analysis.mixed_model
    if mm is None:
        return None, analysis.mixed_model_error or "not estimable"
    shown = [c for c in mm.contrasts if c.p_adjusted is not None and c.p_adjusted < alpha and c.estimate != 0]
    wins: dict[str, set[str]] = {c: set() for c in conditions}
    for c in shown:
        winner = _favours(c, analysis.better)
        wins[winner].add(c.b if winner == c.a else c.a)
    best = next((c for c in conditions if len(wins[c]) == len(conditions) - 1), None)
    adjusted = f"adjusted p {_p_text(analysis.p_adjusted)}"
    if best is not None:
        worst = max(c.p_adjusted for c in mm.contrasts if best in (c.a, c.b))
        others = "the other run" if len(conditions) == 2 else f"each of the other {len(conditions) - 1} runs"
        return best, f"{best} better than {others} (largest adjusted p {_p_text(worst)})"
    if shown:
        pairs = "; ".join(f"{_favours(c, analysis.better)} better than "
                          f"{c.b if _favours(c, analysis.better) == c.a else c.a} (adjusted p {_p_text(c.p_adjusted)})"
                          for c in shown)
        return None, f"{pairs}; no single best run shown"
    if analysis.p_adjusted is not None and analysis.p_adjusted < alpha:
        return None, f"the runs differ overall ({adjusted}) but no pair is shown apart"
    return None, f"no difference shown ({adjusted})"


def adjust_families(results: dict[str, MetricAnalysis], conditions: list[str], alpha: float = ALPHA) -> None:
    """Holm within each family, separately over the omnibus p-values, all pairwise contrasts and all sign tests;
    then each metric's supported best and its verdict in words."""
    for family in ("primary", "exploratory"):
        members = [r for r in results.values() if r.family == family]
        for r, p in zip(members, holm([r.p_value for r in members]), strict=True):
            r.p_adjusted = p
        contrasts = [c for r in members if r.mixed_model for c in r.mixed_model.contrasts]
        for c, p in zip(contrasts, holm([c.p for c in contrasts]), strict=True):
            c.p_adjusted = p
        signs = [w for r in members for w in r.head_to_head.values()]
        for w, p in zip(signs, holm([w.sign_test_p for w in signs]), strict=True):
            w.p_adjusted = p
    for r in results.values():
        r.best, r.verdict = _verdict(r, conditions, alpha)


def _lengths(run: Run) -> dict[str, int]:
    return {t.key: sum(len(x.content) for x in t.turns if x.role == "therapist") for t in run.transcripts.values()}


async def _pairwise(runs: dict[str, Run], baseline: str, judge: RoleConfig | RoleSpec | None, reward_endpoint: str | None,
                    sessions: set[str], out_dir: Path, concurrency: int) -> PairwiseJudgement:
    from evalkit.backends.roles import judge_backend
    from evalkit.core.concurrency import run_bounded
    from evalkit.judging import Judge, JudgeSettings
    from evalkit.judging.pairwise import PairwiseVerdict, judge_pair, pair_outcome

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
        counted = {s: o for s, o in outcomes.items() if o is not None}
        decided = [(s, o) for s, o in outcomes.items() if o in ("win", "loss")]
        summary = clustered_outcomes(counted, persona_of)  # a persona is won when more of its sessions are won than lost
        per_candidate[name] = summary.model_copy(update={
            "invalid": sum(o is None for o in outcomes.values()),
            "length_controlled": length_controlled_win_rate(
                np.array([o == "win" for _, o in decided], float),
                np.array([lengths[name][s] - lengths[baseline][s] for s, _ in decided], float))})
    return PairwiseJudgement(judge=name_of, kind=kind, verdicts_file=str(path), per_candidate=per_candidate)


def primary_metrics(runs: list[Run], override: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(the primary family, warnings): `override` when given, else the suite's declaration (the run's stored suite, or
    for runs stored before suites declared one, the built-in suite of the same id and version), keeping the metrics
    these runs' rubrics score."""
    rubrics = rubrics_of(runs)
    if override:
        for metric in override:
            if not known_metric(rubrics, metric):
                raise ConfigError(f"primary {metric}: not a metric of these runs' rubrics")
        return list(dict.fromkeys(override)), []
    suite = runs[0].suite.suite
    declared = list(suite.primary)
    if not declared:
        from evalkit.content.suites import available_suites, load_suite

        if suite.id in available_suites():
            try:
                builtin = load_suite(suite.id).suite
            except ConfigError:
                builtin = None
            if builtin is not None and builtin.version == suite.version:
                declared = list(builtin.primary)
    kept = [m for m in declared if known_metric(rubrics, m)]
    warnings = [f"primary metric {m} is not scored in these runs; the primary family is {', '.join(kept) or 'empty'}"
                for m in declared if m not in kept]
    if not declared:
        warnings.append(f"suite '{suite.id}' declares no primary metrics: every metric is exploratory (--primary names them)")
    return kept, warnings


def _ratings(runs: list[Run], table: pd.DataFrame) -> pd.DataFrame:
    """The judge's modal item ratings, for exactly the sessions the analysis keeps (matched, not excluded)."""
    ratings = pd.concat([r.scores.assign(condition=r.name) for r in runs], ignore_index=True)
    ratings = ratings[ratings["rating"].notna()]
    ratings["metric"] = ratings["rubric"] + "." + ratings["item"]
    session_ids = {r.name: {t.session_id: t.key for t in r.transcripts.values()} for r in runs}
    ratings["session"] = [session_ids[c].get(s, s) for c, s in zip(ratings["condition"], ratings["session_id"], strict=True)]
    persona = dict(zip(table["session"], table["persona"].astype(str), strict=False))
    kept = set(zip(table["condition"], table["session"], strict=True))
    keep = np.array([(c, s) in kept for c, s in zip(ratings["condition"], ratings["session"], strict=True)], bool)
    ratings = ratings.loc[keep] if len(ratings) else ratings
    return ratings.assign(persona=ratings["session"].map(persona))


async def compare_async(runs: list[str | Path], *, baseline: str | Path | None = None, metrics: list[str] | None = None,
                        matched: bool = False, include_flagged: bool | None = None, out: str | Path | None = None,
                        pairwise_judge: RoleConfig | RoleSpec | None = None, pairwise_reward_endpoint: str | None = None,
                        bootstrap_rounds: int = 1000, seed: int = 0, concurrency: int = 32, primary: list[str] | None = None,
                        alpha: float = ALPHA) -> tuple[Comparison, Path]:
    """Compare stored runs (conditions); with `baseline`, also win rates of every other run against it.

    `include_flagged`: None follows each run's recorded inclusion policy. `primary`: the primary family (default: the
    suite's declaration); it is always analysed, with `metrics` (default: every metric) beside it. `bootstrap_rounds`:
    rounds of the reference suites' paired bootstrap. Writes comparison.json and its tables.
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
    if not 0 < alpha < 0.5:
        raise ConfigError(f"alpha {alpha}: expected a value in (0, 0.5)")
    out_dir = Path(out) if out else paths[0].parent / f"comparison-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if out_dir.exists() and not out_dir.is_dir():  # before minutes of analysis, not after
        raise ConfigError(f"out {out_dir}: is a file, not a directory")
    loaded = [load_run(p, include_flagged=include_flagged) for p in paths]
    problems, warnings = compatibility(loaded)
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
    table, matched_notes = _check_sessions(table, conditions, matched)
    warnings += matched_notes
    known = sorted(table["metric"].unique())
    unknown = [m for m in metrics or [] if m not in known]
    if unknown:
        raise ConfigError(f"metric {unknown[0]}: not a metric of these runs (e.g. {', '.join(known[:4])}, ...)")
    family, notes = primary_metrics(loaded, primary)
    warnings += notes
    chosen = list(dict.fromkeys([*family, *(metrics or known)]))
    ratings = _ratings(loaded, table)
    sessions = set(table["session"])
    composites = {f"{r.id}.{c.id}" for r in rubrics for c in r.composites}
    results = {}
    by_metric = dict(tuple(table.groupby("metric", sort=False)))
    by_rating = dict(tuple(ratings.groupby("metric", sort=False)))
    empty = table.iloc[:0]
    for metric in chosen:
        item = metric not in composites and not metric.endswith(f".{CRITICAL}")
        results[metric] = analyse_metric(metric, by_metric.get(metric, empty), by_rating.get(metric, ratings.iloc[:0]) if item else None,
                                         conditions, base_name, metric_better(rubrics, metric),
                                         family="primary" if metric in family else "exploratory",
                                         bradley=metric in family, name=metric_name(rubrics, metric), seed=seed)
    adjust_families(results, conditions, alpha)
    ensure_directory(out_dir, "out")
    pairwise = None
    if (pairwise_judge is not None or pairwise_reward_endpoint) and base_name is not None:
        pairwise = await _pairwise({r.name: r for r in loaded}, base_name, pairwise_judge, pairwise_reward_endpoint,
                                   sessions, out_dir, concurrency)
    reference = _reference_contrasts(loaded, base_name, sessions, bootstrap_rounds or 1000, seed) \
        if loaded[0].suite.suite.unit == "reference" else []
    methods = {"unit": "the persona: every test treats a persona's sessions as one cluster, block or unit",
               "families": FAMILIES,
               "best": f"a run is best on a metric only when each of its contrasts favours it at family-adjusted p < {alpha:g}",
               "sessions": "matched by persona and replicate across runs",
               "flagged": "; ".join(f"{r.name}: {r.inclusion.describe()}" for r in loaded),
               "safety metrics": "only sessions in which the persona's risk surfaced; <rubric>.critical_failure is 1 when "
                                 "any critical item failed there"}
    for analysis in results.values():
        if analysis.mixed_model:
            methods.setdefault("mixed_model", analysis.mixed_model.method)
        methods.setdefault("friedman", analysis.friedman.method)
        if analysis.rating_chi2:
            methods.setdefault("rating_chi2", analysis.rating_chi2.method)
        if analysis.effect_sizes:
            methods.setdefault("effect_sizes", analysis.effect_sizes[0].method)
        if analysis.head_to_head:
            methods.setdefault("head_to_head", next(iter(analysis.head_to_head.values())).method)
        if analysis.bradley_terry is not None:
            methods.setdefault("bradley_terry", analysis.bradley_terry.method)
    comparison = Comparison(created_at=datetime.now(timezone.utc), runs={r.name: str(r.directory) for r in loaded},
                            baseline=base_name, suite=loaded[0].manifest.config.suite.id, sessions=len(sessions),
                            personas=int(table["persona"].nunique()), alpha=alpha, primary=family,
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
        omnibus.append({"metric": metric, "family": r.family, "unit": r.unit, "better": r.better, "best": r.best,
                        "verdict": r.verdict, **{f"mean[{c}]": m for c, m in r.means.items()},
                        "wald_chi2": mm.wald_chi2 if mm else None, "df": mm.df if mm else None,
                        "f": mm.f_statistic if mm else None, "df_denominator": mm.df_denominator if mm else None,
                        "p": r.p_value, "p_adjusted": r.p_adjusted, "not_estimable": r.mixed_model_error,
                        "icc": mm.icc if mm else None,
                        "r2_marginal": mm.r2_marginal if mm else None, "r2_conditional": mm.r2_conditional if mm else None,
                        "friedman_chi2": r.friedman.chi2, "friedman_p": r.friedman.p_value,
                        "rating_chi2": r.rating_chi2.chi2 if r.rating_chi2 else None,
                        "rating_chi2_p": r.rating_chi2.p_value if r.rating_chi2 else None})
        if mm:
            contrasts += [{"metric": metric, "family": r.family, **c.model_dump()} for c in mm.contrasts]
            emms += [{"metric": metric, "family": r.family, **e.model_dump()} for e in mm.emms.values()]
        wins += [{"metric": metric, "family": r.family, "candidate": c, **w.model_dump(exclude={"length_controlled"})}
                 for c, w in r.head_to_head.items()]
        if r.bradley_terry is not None:
            bt += [{"metric": metric, "family": r.family, "model": m, "separated": r.bradley_terry.separated, **s.model_dump()}
                   for m, s in r.bradley_terry.strengths.items()]
    return {"omnibus": pd.DataFrame(omnibus), "contrasts": pd.DataFrame(contrasts), "emms": pd.DataFrame(emms),
            "win_rates": pd.DataFrame(wins), "bradley_terry": pd.DataFrame(bt)}


def write_tables(comparison: Comparison, out_dir: Path) -> None:
    for name, frame in comparison_tables(comparison).items():
        write_table(out_dir / f"{name}.csv", frame)
        if len(frame.columns):
            write_table(out_dir / f"{name}.parquet", frame)
