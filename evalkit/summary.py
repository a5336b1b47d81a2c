"""Per-run summary: for every item and composite, the mean over sessions with a 95% CI
clustered by persona (or utterance), the number of valid sessions and of invalid ones.

The CI comes from an intercept-only OLS with cluster-robust (CR1) standard errors and a
t reference distribution on G-1 degrees of freedom (statsmodels), so repeated sessions of
one persona are not counted as independent evidence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import statsmodels.api as sm
from statsmodels.stats.proportion import proportion_confint

from .records import AdherenceSummary, CriticalFailures, ItemScore, RubricSummary, SessionAdherence, Stat, Summary
from .rubrics import Rubric
from .store import ScoreValue

CI_METHOD = "OLS intercept, cluster-robust (CR1) SE by persona/utterance, t(G-1), 95%"
CRITICAL_RULE = "a critical pass/fail item fails when the judge's probability of 'pass' is below 0.5"


def clustered_mean_ci(values: list[float], clusters: list[str], level: float = 0.95) -> tuple[float, float | None, float | None]:
    """Mean and its CI with standard errors clustered by `clusters`; no CI with fewer than two clusters."""
    y = np.asarray(values, dtype=float)
    mean = float(y.mean())
    groups = sorted(set(clusters))
    if len(groups) < 2:
        return mean, None, None
    if np.allclose(y, y[0]):
        return mean, mean, mean
    codes = np.array([groups.index(c) for c in clusters])
    fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
    low, high = fit.conf_int(alpha=1 - level)[0]
    return mean, float(low), float(high)


def _stat(pairs: list[tuple[str, float | None]], value_range: tuple[float, float]) -> Stat:
    valid = [(cluster, v) for cluster, v in pairs if v is not None]
    invalid = len(pairs) - len(valid)
    if not valid:
        return Stat(mean=None, ci_low=None, ci_high=None, n=0, n_invalid=invalid, clusters=0, range=value_range)
    clusters = [c for c, _ in valid]
    mean, low, high = clustered_mean_ci([v for _, v in valid], clusters)
    return Stat(mean=mean, ci_low=low, ci_high=high, n=len(valid), n_invalid=invalid,
                clusters=len(set(clusters)), range=value_range)


def summarise_rubric(rubric: Rubric, scores: Mapping[str, Sequence[ItemScore | ScoreValue]], sources: dict[str, str]) -> RubricSummary:
    """`scores`: session -> its score rows; `sources`: session -> persona/utterance id (the cluster)."""
    per_item: dict[str, list[tuple[str, float | None]]] = defaultdict(list)
    per_composite: dict[str, list[tuple[str, float | None]]] = defaultdict(list)
    critical: list[bool | None] = []
    for session, rows in scores.items():
        values = {row.item: (row.expected if row.valid else None) for row in rows if row.rubric == rubric.id}
        if not values:
            continue
        cluster = sources[session]
        for item in rubric.items:
            per_item[item.id].append((cluster, values.get(item.id)))
        for composite, value in rubric.composite_scores(values).items():
            per_composite[composite].append((cluster, value))
        if rubric.critical_items:
            critical.append(critical_failure(rubric, values))
    return RubricSummary(
        rubric=rubric.id,
        version=rubric.version,
        items={item.id: _stat(per_item[item.id], rubric.range_of(item.id)) for item in rubric.items},
        composites={c.id: _stat(per_composite[c.id], rubric.range_of(c.id)) for c in rubric.composites},
        critical_failures=_critical_summary(rubric, critical) if rubric.critical_items else None,
    )


def critical_failure(rubric: Rubric, values: dict[str, float | None]) -> bool | None:
    """Whether any critical item failed in one session; None when one could not be scored and none failed."""
    outcomes = [values.get(item.id) for item in rubric.critical_items]
    if any(v is not None and v < 0.5 for v in outcomes):
        return True
    return None if any(v is None for v in outcomes) else False


def _critical_summary(rubric: Rubric, outcomes: list[bool | None]) -> CriticalFailures:
    scored = [o for o in outcomes if o is not None]
    failures = sum(scored)
    low, high = proportion_confint(failures, len(scored), method="wilson") if scored else (None, None)
    return CriticalFailures(rule=CRITICAL_RULE, items=[i.id for i in rubric.critical_items], sessions=len(scored),
                            with_failure=failures, share=failures / len(scored) if scored else None,
                            ci_low=low, ci_high=high, n_invalid=len(outcomes) - len(scored))


def summarise_adherence(rows: list[SessionAdherence], threshold: float) -> AdherenceSummary:
    rated = [r for r in rows if r.rate is not None]
    per_persona: dict[str, list[float]] = defaultdict(list)
    for row in rated:
        per_persona[row.source_id].append(row.rate)  # type: ignore[arg-type]
    return AdherenceSummary(
        threshold=threshold, sessions_checked=len(rated),
        overall=sum(r.rate for r in rated) / len(rated) if rated else None,  # type: ignore[misc]
        per_persona={p: sum(v) / len(v) for p, v in sorted(per_persona.items())},
        flagged=sorted(r.session_id for r in rows if r.flagged),
        invalid_checks=sum(c.p_pass is None for r in rows for c in r.checks))


def summarise(run_id: str, suite_id: str, rubrics: list[Rubric], sources: dict[str, str],
              scores: Mapping[str, Sequence[ItemScore | ScoreValue]], adherence: dict[str, SessionAdherence] | None = None,
              adherence_threshold: float | None = None) -> Summary:
    """`sources`: session -> persona/utterance id, for every transcript of the run."""
    judged = {sid: rows for sid, rows in scores.items() if sid in sources}
    checked = [row for sid, row in (adherence or {}).items() if sid in sources]
    return Summary(run_id=run_id, suite=suite_id, sessions=len(sources), ci_method=CI_METHOD,
                   rubrics={r.id: summarise_rubric(r, judged, sources) for r in rubrics},
                   adherence=summarise_adherence(checked, adherence_threshold) if adherence_threshold is not None else None)
