"""Typed results of the statistics in `evalkit.statistics` (pydantic v2, extra fields forbidden).

Every result names its `method`: the model or test, the reference distribution and the covariance
used, so a number in comparison.json or gate.json can be read without the code. docs/statistics.md
describes each field.

Results also read like read-only mappings (`result["field"]`, `.get`, `.keys`, `.items`, `**result`),
so callers written for the earlier dict results keep working while they move to attributes. A result
that can be absent (`absent_reason` set) is falsy, so `result or {}` and `if result:` still work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class StatResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Read-only mapping access, for callers written against the earlier dict results.
    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in type(self).model_fields:
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        setattr(self, key, value)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in type(self).model_fields else default

    def keys(self):
        return type(self).model_fields.keys()

    def items(self):
        return [(k, getattr(self, k)) for k in type(self).model_fields]

    def values(self):
        return [getattr(self, k) for k in type(self).model_fields]

    def __contains__(self, key: object) -> bool:
        return key in type(self).model_fields

    def __len__(self) -> int:
        return len(type(self).model_fields)


Mapping.register(StatResult)


class Absentable(StatResult):
    """A result that may be absent; then `absent_reason` says why and the result is falsy."""

    absent_reason: str | None = Field(None, description="why there is no result (None when there is one)")

    def __bool__(self) -> bool:
        return self.absent_reason is None


# --- linear mixed model -------------------------------------------------------------------------------------------


class Emm(StatResult):
    """Estimated marginal mean of one condition (persona-averaged)."""

    condition: str
    mean: float
    se: float
    df: float = Field(description="t degrees of freedom of the CI (containment: personas - 1)")
    ci_low: float
    ci_high: float


class Contrast(StatResult):
    """Difference of two conditions' EMMs, a minus b."""

    a: str
    b: str
    estimate: float
    se: float
    df: float = Field(description="t degrees of freedom (containment df of the condition term)")
    t: float
    p: float = Field(description="two-sided p from t(df), unadjusted")
    p_holm_sidak: float = Field(description="Holm-Sidak adjusted over all pairwise contrasts of the metric")
    ci_low: float = Field(description="unadjusted CI at the fit's level")
    ci_high: float
    p_adjusted: float | None = Field(None, description="Holm adjusted over every contrast of every metric in the metric's "
                                     "family (primary or exploratory) in one comparison; set by compare")


class MixedModelResult(StatResult):
    method: str
    unit: str = Field("persona", description="the unit of replication: persona (random intercept, persona x condition term)")
    formula: str
    conditions: list[str]
    n: int = Field(description="observations (sessions x conditions) in the fit")
    groups: int = Field(description="personas (clusters)")
    cells: int = Field(description="persona x condition cells with at least one observation")
    persona_condition_term: bool = Field(description="True when (1|persona:condition) is in the model (replicates present)")
    wald_chi2: float = Field(description="Wald statistic for 'all conditions equal'")
    df: int = Field(description="numerator df: conditions - 1")
    p_value_chi2: float = Field(description="asymptotic p from chi-square(df); anticonservative with few personas")
    f_statistic: float = Field(description="wald_chi2 / df")
    df_denominator: float = Field(description="containment (between-within) denominator df")
    p_value: float = Field(description="p from F(df, df_denominator): the omnibus test to report")
    covariance: Literal["lme4", "statsmodels"] = Field(description="lme4: (X'V^-1X)^-1 at the REML estimates; "
                                                        "statsmodels: inverse of the full observed-information Hessian")
    level: float
    emms: dict[str, Emm]
    contrasts: list[Contrast]
    icc: float = Field(description="persona ICC: var_persona / (var_persona + var_persona_condition + var_residual)")
    icc_persona_condition: float | None = Field(description="(var_persona + var_persona_condition) / total random "
                                                "variance: correlation of two sessions of one persona in one condition")
    r2_marginal: float = Field(description="Nakagawa & Schielzeth: var_fixed / (var_fixed + all variance components)")
    r2_conditional: float = Field(description="(var_fixed + var_persona + var_persona_condition) / total")
    var_fixed: float
    var_persona: float
    var_persona_condition: float | None
    var_residual: float
    reml_loglik: float
    converged: bool = Field(description="the best fit's REML gradient is ~0 (checked, not taken from the optimiser)")
    optimizer: str = Field(description="optimiser and start that gave the highest REML log-likelihood")
    optimizers_tried: dict[str, float | None] = Field(description="optimiser -> REML log-likelihood reached (None: failed)")
    warnings: list[str] = []


# --- nonparametric ------------------------------------------------------------------------------------------------


class NonparametricResult(Absentable):
    method: str
    df: int | None = None
    p_value: float | None = None


class FriedmanResult(NonparametricResult):
    chi2: float | None = None
    unit: str = Field("persona", description="what a block is: a persona, its sessions averaged per condition")
    blocks: int = Field(0, description="personas scored validly in every condition")


class KruskalWallisResult(NonparametricResult):
    h: float | None = None
    n: int = 0


class RatingChi2Result(NonparametricResult):
    chi2: float | None = None
    unit: str = Field("persona", description="what is permuted: condition labels of whole persona x condition cells, "
                                             "within persona")
    permutations: int = Field(0, description="random within-persona permutations behind p_value")
    levels: list[int] = []
    counts: list[list[int]] = []
    min_expected: float | None = None


class EffectSize(StatResult):
    a: str
    b: str
    n_a: int
    n_b: int
    cohens_d: float = Field(description="(mean a - mean b) / pooled SD over sessions (descriptive; no test)")
    rank_biserial: float = Field(description="P(a > b) - P(a < b) over sessions, from Mann-Whitney U (descriptive; no test)")
    method: str
    unit: str = Field("session", description="descriptive effect sizes over sessions; no test or interval is attached")


# --- win rates and Bradley-Terry ----------------------------------------------------------------------------------


class LengthControlledWinRate(Absentable):
    method: str
    win_rate_at_equal_length: float | None = None
    intercept: float | None = None
    slope_per_1000_chars: float | None = None
    n: int = 0


class WinSummary(StatResult):
    """Wins of a candidate over a baseline, counted over personas: a persona is won when the candidate's mean over the
    persona's matched sessions is better (lost when worse, tied when equal), so its replicates are one unit."""

    method: str
    unit: Literal["persona", "session"] = Field("persona", description="what wins, losses and ties count")
    wins: int
    losses: int
    ties: int
    n: int
    win_rate: float | None = Field(description="wins / (wins + losses), over units")
    ci_low: float | None = Field(description="Wilson interval on win_rate over units")
    ci_high: float | None
    sign_test_p: float | None = Field(description="exact two-sided binomial test of win_rate = 0.5 over units, ties dropped")
    p_adjusted: float | None = Field(None, description="sign_test_p, Holm adjusted over the metric's family and every "
                                     "candidate in one comparison; set by compare")
    win_rate_ties_half: float | None
    session_wins: int | None = Field(None, description="sessions the candidate won (descriptive: sessions of one persona "
                                     "are not independent)")
    session_losses: int | None = None
    session_ties: int | None = None
    invalid: int | None = Field(None, description="pairs with no valid verdict (pairwise judge only)")
    length_controlled: LengthControlledWinRate | None = None


class HeadToHead(WinSummary):
    matched: int = Field(description="sessions scored validly in both conditions")


class BradleyTerryStrength(StatResult):
    strength: float | None = Field(description="log-odds strength relative to the reference model (maximum likelihood); "
                                   "None when the model is separated")
    se: float | None = Field(None, description="cluster-robust (CR1, by persona) standard error")
    ci_low: float | None = None
    ci_high: float | None = None
    wins: int
    losses: int


class BradleyTerryResult(Absentable):
    """Bradley-Terry strengths by maximum likelihood, with intervals clustered by persona. Absent (falsy, no strength
    and no interval) when the win graph is separated: then the maximum-likelihood estimate does not exist and any
    finite number would come from a prior or from where an optimiser stopped."""

    method: str
    unit: str = Field("persona", description="the cluster of the interval: comparisons of one persona's sessions together")
    models: list[str]
    reference: str = Field(description="model whose strength is fixed at 0")
    comparisons: int
    personas: int = Field(0, description="clusters behind the intervals")
    df: int | None = Field(None, description="t degrees of freedom of the intervals: personas - 1")
    level: float = 0.95
    strengths: dict[str, BradleyTerryStrength] = {}
    separated: bool = Field(description="the win graph is not strongly connected: no finite maximum-likelihood estimate")
    separated_models: list[str] = Field(description="models that won every comparison or lost every comparison")
    converged: bool = True


# --- non-inferiority gate and planning ----------------------------------------------------------------------------


class NoninferiorityDecision(StatResult):
    verdict: Literal["pass", "regression", "undecided"]
    reason: str
    method: str
    unit: Literal["persona", "session"] = Field("persona", description="the unit the t test is over")
    n: int = Field(description="matched sessions (paired differences)")
    personas: int = Field(description="clusters the test is over (each session its own when no persona labels)")
    replicates: float = Field(description="mean sessions per persona")
    mean_drop: float | None = Field(description="mean of persona-mean drops (baseline - candidate, + = worse)")
    sd: float = Field(description="SD of persona-mean drops")
    se: float
    df: int = Field(description="personas - 1")
    upper_bound: float = Field(description="one-sided (1 - alpha) upper bound of the mean drop")
    lower_bound: float = Field(description="one-sided (1 - alpha) lower bound of the mean drop")
    margin: float
    alpha: float
    power: float
    personas_needed: int = Field(description="personas (at the current replicates) for an equal candidate to pass w.p. power")
    sessions_needed: int = Field(description="personas_needed x replicates")


class DesignOption(StatResult):
    """One row of a plan: personas needed at a number of replicates per persona."""

    replicates: int
    sd: float = Field(description="SD of persona-mean differences at these replicates: sqrt(var_between + var_within / r)")
    personas_pass: int
    sessions_pass: int
    personas_detect: int | None
    sessions_detect: int | None


class PlanResult(StatResult):
    method: str
    unit: Literal["persona"] = Field("persona", description="what n counts: personas (the gate's unit), each run with "
                                     "`replicates` sessions")
    var_between: float = Field(description="variance across personas of a persona's true drop (twice the persona x model "
                               "variance when two different models are compared)")
    var_within: float = Field(description="variance of one session's drop around its persona's (twice the residual variance)")
    within_known: bool = Field(True, description="False when the within-persona part could not be separated (no replicates, "
                               "or only a total SD was given): it is then counted as between-persona, which is conservative")
    source: str = Field(description="where the variance components came from")
    sd: float = Field(description="SD of persona-mean differences at `replicates`: sqrt(var_between + var_within / replicates)")
    replicates: int = Field(description="sessions per persona the plan is for")
    margin: float
    drop: float = Field(description="true drop the 'detect' figure is for")
    alpha: float
    power: float
    n_pass: int = Field(description="personas for an equal candidate to pass with probability power")
    n_detect: int | None = Field(description="personas for a true drop of `drop` to exit 'regression' with probability power "
                                 "(None: not reachable, see note)")
    sessions_pass: int = Field(description="n_pass x replicates")
    sessions_detect: int | None
    power_pass_at_n_pass: float
    power_detect_at_n_detect: float | None
    options: list[DesignOption] = Field([], description="personas needed at other numbers of replicates")
    metric: str | None = None
    scoring_floor: float | None = Field(None, description="what a flawless session scores away from the best value when the "
                                        "judge puts 90% on the right level and spreads the rest evenly (metric units)")
    note: str | None = None
    warnings: list[str] = []
