"""`evalkit plan`: how many personas, each with how many replicates, a gate on one metric needs.

The gate averages each persona's paired drops and runs a t test over personas, so the plan is in personas x
replicates and its SD is that of a persona-mean difference: sqrt(var_between + var_within / r), var_between the
variance of personas' true drops (twice the persona x model variance: two different models suit a persona
differently) and var_within that of one session's drop around its persona's. Both come from two stored runs of two
different models (REML on their matched differences), or are given. Two runs of one model cancel the persona x model
variance, so a plan from them is too small (3 personas where 21 were needed in the issue that led here): they are
refused.

The scoring floor of a metric is reported beside the plan: with expected-value scoring, a flawless session scores
away from the best value by what the judge's uncertainty spreads over the other levels.
"""

from __future__ import annotations

from pathlib import Path

from evalkit.analysis.runs import CRITICAL, Run, compatibility, left_out, load_run, metric_rows, rubrics_of
from evalkit.content.rubrics import Rubric
from evalkit.core.errors import ConfigError, EvalkitError
from evalkit.statistics.noninferiority import persona_of, plan, plan_from_differences
from evalkit.statistics.results import PlanResult

FLOOR_CONFIDENCE = 0.9


def scoring_floor(rubrics: list[Rubric], metric: str, confidence: float = FLOOR_CONFIDENCE) -> float | None:
    """How far from its best value a flawless session scores on `metric` when the judge puts `confidence` on the right
    level of every item and spreads the rest evenly over the other levels (expected-value scoring).

    E.g. the ACT-FM inconsistency total (12 items, 0-3, best 0): each item scores 0.1 x mean(1, 2, 3) = 0.2, the
    total 2.4. A critical-failure share has no floor (a critical item fails below 0.5, not by its expectation)."""
    rubric_id, _, score = metric.partition(".")
    rubric = next((r for r in rubrics if r.id == rubric_id), None)
    if rubric is None or score == CRITICAL:
        return None if rubric is None else 0.0
    best, expected = {}, {}
    for item in rubric.items:
        levels = rubric.scale_of(item).levels
        top = levels[-1] if rubric.better(item.id) == "higher" else levels[0]
        others = [level for level in levels if level != top]
        best[item.id] = float(top)
        expected[item.id] = confidence * top + (1 - confidence) * sum(others) / len(others)
    if score in best:
        return abs(expected[score] - best[score])
    flawless, perfect = rubric.composite_scores(expected).get(score), rubric.composite_scores(best).get(score)
    return None if flawless is None or perfect is None else abs(flawless - perfect)


def floor_warning(metric: str, margin: float, floor: float | None) -> str | None:
    if floor is None or margin >= floor:
        return None
    return (f"{metric}: margin {margin:g} is below the scoring floor {floor:.3g} (a flawless session's distance from the best "
            f"value at {FLOOR_CONFIDENCE:.0%} judge confidence): a change in the judge's confidence alone can exceed it")


def _same_model(runs: list[Run]) -> str | None:
    identities = {run.therapist_identity for run in runs}
    if len(identities) == 1:
        return next(iter(identities))
    return None


def plan_gate(metric: str, margin: float | None = None, *, runs: list[str | Path] | None = None, sd: float | None = None,
              sd_between: float | None = None, sd_within: float | None = None, replicates: int | None = None,
              detect: float | None = None, power: float = 0.8, alpha: float = 0.05,
              include_flagged: bool | None = None) -> PlanResult:
    """Personas (x replicates) for a gate on `metric`: an equal candidate passes, and a true drop of `detect` (default
    one margin) exits 'regression', each with probability `power`.

    The variance components come from two stored runs of different models (`runs`), or are given: `sd_between` (SD of
    personas' true drops) with `sd_within` (SD of one session's drop around its persona's), or `sd`, a total per-session
    SD of paired differences, which is taken as all between-persona (conservative: more replicates are then assumed not
    to help). `margin` defaults to the suite's gate margin when runs are given."""
    given = [x is not None for x in (sd, sd_between)]
    if sum(given) + bool(runs) != 1:
        raise ConfigError("plan: give two stored runs of different models, or --sd-between (with --sd-within), or --sd")
    if sd_within is not None and sd_between is None:
        raise ConfigError("sd_within: give it with --sd-between (the SD of personas' true drops)")
    for name, value in (("sd", sd), ("sd_between", sd_between)):
        if value is not None and not value > 0:
            raise ConfigError(f"{name} {value}: expected a positive number")
    if sd_within is not None and not sd_within >= 0:
        raise ConfigError(f"sd_within {sd_within}: expected 0 or more")
    if not 0 < power < 1 or not 0 < alpha < 0.5:
        raise ConfigError("power and alpha: expected power in (0, 1) and alpha in (0, 0.5)")
    if detect is not None and not detect > 0:
        raise ConfigError(f"detect {detect}: expected a positive drop")
    if replicates is not None and not replicates >= 1:
        raise ConfigError(f"replicates {replicates}: expected 1 or more sessions per persona")
    if margin is not None and not margin > 0:
        raise ConfigError(f"margin {margin}: expected a positive number")
    rubrics: list[Rubric] = []
    if not runs:
        if margin is None:
            raise ConfigError("margin: required when the SD is given (with two stored runs it defaults to the suite's)")
        if sd is not None:
            result = plan(margin, var_between=sd**2, var_within=0.0, replicates=replicates or 1, alpha=alpha, power=power,
                          drop=detect, within_known=False, source=f"given: total SD {sd:g} of a session's paired difference, "
                          "counted as between-persona (conservative; --sd-between and --sd-within separate it)")
        else:
            within = 0.0 if sd_within is None else sd_within**2
            result = plan(margin, var_between=sd_between**2, var_within=within, replicates=replicates or 1,  # type: ignore[operator]
                          alpha=alpha, power=power, drop=detect, within_known=sd_within is not None,
                          source=f"given: SD {sd_between:g} between personas, {0.0 if sd_within is None else sd_within:g} within")
        return _with_floor(result, metric, rubrics)
    if len(runs) != 2:
        raise ConfigError("run: give two stored runs of the same suite and of different models (their matched differences "
                          "set the variance components)")
    loaded = [load_run(r, name=f"run{i}", include_flagged=include_flagged) for i, r in enumerate(runs)]
    refuse, _ = compatibility(loaded)
    if refuse:
        raise EvalkitError(f"runs are not comparable: {'; '.join(refuse)}")
    if (identity := _same_model(loaded)) is not None:
        raise ConfigError(f"run: both runs are of the same model ({identity}): a repeat cancels the persona x model variance "
                          "that the gate's SD must include, so the plan would be far too small; give runs of two different "
                          "models (e.g. the baseline and an earlier checkpoint)")
    rubrics = rubrics_of(loaded)
    if margin is None:
        gate = loaded[0].suite.suite.gate
        margin = gate.metrics.get(metric) if gate else None
        if margin is None:
            raise ConfigError(f"margin: suite '{loaded[0].suite.suite.id}' declares no gate margin for {metric}; pass --margin")
    table = metric_rows(loaded)
    table = table[table["metric"] == metric].dropna(subset=["value"])
    if table.empty:
        raise EvalkitError(f"metric {metric} has no valid scores in {', '.join(map(str, runs))}" + left_out(*loaded))
    wide = table.pivot_table(index="session", columns="condition", values="value").dropna()
    if len(wide) < 2 or wide.shape[1] < 2:
        raise EvalkitError(f"metric {metric}: the two runs share fewer than two scored sessions")
    personas = [persona_of(s) for s in wide.index]
    if len(set(personas)) < 2:
        raise EvalkitError(f"metric {metric}: the two runs share sessions of only one persona; the plan needs two or more")
    result = plan_from_differences((wide["run0"] - wide["run1"]).to_numpy(), margin, alpha, power, detect,
                                   personas=personas, replicates=replicates)
    return _with_floor(result, metric, rubrics)


def _with_floor(result: PlanResult, metric: str, rubrics: list[Rubric]) -> PlanResult:
    if not rubrics:
        from evalkit.content.rubrics import load_rubric

        try:
            rubrics = [load_rubric(metric.partition(".")[0])]
        except ConfigError:
            rubrics = []
    floor = scoring_floor(rubrics, metric)
    warnings = list(result.warnings)
    if not result.within_known:
        warnings.append("the within-persona variance is not known, so it is counted as between-persona: replicates are "
                        "assumed not to help (the plan is conservative)")
    if (text := floor_warning(metric, result.margin, floor)) is not None:
        warnings.append(text)
    return result.model_copy(update={"metric": metric, "scoring_floor": floor, "warnings": warnings})
