"""Error rates of the statistics, by seeded simulation (no server, no stored runs).

Each test draws data from the model the analysis assumes, with the heterogeneity real runs have (a
persona effect, and a persona x model interaction that makes a persona's sessions agree within a
model), and checks the rate at which the analysis reaches each verdict against its nominal value.
Bounds are about three binomial standard errors wide. Where a test also runs the analysis that treated
sessions as independent, it shows that analysis failing on the same data, so each bound can fail.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from evalkit.statistics.mixed import fit_mixed_model
from evalkit.statistics.multiplicity import holm
from evalkit.statistics.noninferiority import decide, pass_probability, plan, sessions_needed, variance_components
from evalkit.statistics.nonparametric import friedman, rating_counts_chi2
from evalkit.statistics.proportion import clustered_proportion_ci
from evalkit.statistics.winrate import bradley_terry, head_to_head, pairwise_outcomes

PERSONAS, REPLICATES = 10, 3
PERSONA_SD, INTERACTION_SD, RESIDUAL_SD = 0.5, 0.3, 0.3
MARGIN, ALPHA, POWER = 0.25, 0.05, 0.8
CONDITIONS = ["a", "b", "c"]


def null_scores(rng: np.random.Generator) -> pd.DataFrame:
    """3 conditions with equal means; persona SD 0.5, persona x condition SD 0.3, residual SD 0.3."""
    persona = rng.normal(0, PERSONA_SD, PERSONAS)
    interaction = rng.normal(0, INTERACTION_SD, (PERSONAS, len(CONDITIONS)))
    noise = rng.normal(0, RESIDUAL_SD, (PERSONAS, len(CONDITIONS), REPLICATES))
    value = persona[:, None, None] + interaction[:, :, None] + noise
    p, c, r = np.meshgrid(np.arange(PERSONAS), np.arange(len(CONDITIONS)), np.arange(REPLICATES), indexing="ij")
    return pd.DataFrame({"condition": np.array(CONDITIONS)[c.ravel()], "persona": [f"p{i}" for i in p.ravel()],
                         "session": [f"p{i}#{j}" for i, j in zip(p.ravel(), r.ravel(), strict=True)], "value": value.ravel()})


def test_omnibus_and_contrasts_hold_their_level_with_persona_condition_heterogeneity():
    """Without (1|persona:condition) this rejected ~29-35% of null datasets; with it and a chi-square reference ~8%."""
    rng = np.random.default_rng(20260101)
    datasets = 400
    omnibus = familywise = not_converged = 0
    for _ in range(datasets):
        fit = fit_mixed_model(null_scores(rng), CONDITIONS)
        omnibus += fit.p_value < 0.05
        familywise += min(c.p_holm_sidak for c in fit.contrasts) < 0.05
        not_converged += not fit.converged
    assert 0.02 <= omnibus / datasets <= 0.08, omnibus / datasets
    assert familywise / datasets <= 0.08, familywise / datasets
    assert not_converged == 0


def drops(rng: np.random.Generator, datasets: int, personas: int, drop: float) -> tuple[np.ndarray, list[str]]:
    """Paired differences baseline - candidate for `datasets` gate runs: each persona's drop varies by the difference of
    two persona x model interactions (SD 0.3 each), each session adds two residuals (SD 0.3 each)."""
    persona_drop = rng.normal(0, INTERACTION_SD * np.sqrt(2), (datasets, personas, 1))
    session = rng.normal(0, RESIDUAL_SD * np.sqrt(2), (datasets, personas, REPLICATES))
    labels = [f"p{i}" for i in range(personas) for _ in range(REPLICATES)]
    return (drop + persona_drop + session).reshape(datasets, -1), labels


def verdicts(d: np.ndarray, labels: list[str] | None) -> dict[str, float]:
    out = [decide(row, MARGIN, ALPHA, POWER, personas=labels).verdict for row in d]
    return {v: out.count(v) / len(out) for v in ("pass", "regression", "undecided")}


def test_gate_passes_a_drop_of_one_margin_at_most_alpha_of_the_time():
    rng = np.random.default_rng(7)
    d, labels = drops(rng, 4000, PERSONAS, MARGIN)
    clustered = verdicts(d, labels)
    assert clustered["pass"] <= 0.06, clustered  # exact t over persona means: 0.05 expected
    # The same data analysed with sessions as independent units pass too often (the defect this fixes).
    assert verdicts(d, None)["pass"] > 0.08


def test_gate_calls_an_equal_candidate_a_regression_at_most_alpha_of_the_time():
    rng = np.random.default_rng(8)
    d, labels = drops(rng, 4000, PERSONAS, 0.0)
    assert verdicts(d, labels)["regression"] <= 0.06


def test_plan_figures_hold_in_simulation():
    """The SD that plan needs is of persona-mean differences: sqrt(2 * 0.3^2 + 2 * 0.3^2 / replicates)."""
    result = plan(MARGIN, var_between=2 * INTERACTION_SD**2, var_within=2 * RESIDUAL_SD**2, replicates=REPLICATES,
                  alpha=ALPHA, power=POWER, drop=1.5 * MARGIN)
    assert result.sessions_detect == REPLICATES * result.n_detect
    rng = np.random.default_rng(9)
    d, labels = drops(rng, 2000, result.n_detect, 1.5 * MARGIN)
    assert verdicts(d, labels)["regression"] >= POWER - 0.025
    d, labels = drops(rng, 2000, result.n_pass, 0.0)
    assert verdicts(d, labels)["pass"] >= POWER - 0.025


# --- every test compare prints, with persona clustering -----------------------------------------------------------


def scores(rng: np.random.Generator, datasets: int, personas: int = PERSONAS, conditions: int = 3,
           effects: np.ndarray | None = None) -> np.ndarray:
    """(datasets, personas, conditions, replicates) scores: persona SD 0.5, persona x condition SD 0.3, residual 0.3."""
    effects = np.zeros(conditions) if effects is None else effects
    return (effects[None, None, :, None] + rng.normal(0, PERSONA_SD, (datasets, personas, 1, 1))
            + rng.normal(0, INTERACTION_SD, (datasets, personas, conditions, 1))
            + rng.normal(0, RESIDUAL_SD, (datasets, personas, conditions, REPLICATES)))


def frame(values: np.ndarray) -> pd.DataFrame:
    """One dataset (personas, conditions, replicates) as compare's long table."""
    personas, conditions, replicates = values.shape
    p, c, r = np.meshgrid(np.arange(personas), np.arange(conditions), np.arange(replicates), indexing="ij")
    return pd.DataFrame({"condition": np.array([f"c{j}" for j in range(conditions)])[c.ravel()],
                         "persona": np.array([f"p{i}" for i in range(personas)])[p.ravel()],
                         "session": [f"p{i}#{j}" for i, j in zip(p.ravel(), r.ravel(), strict=True)], "value": values.ravel()})


def test_friedman_over_persona_blocks_holds_its_level():
    """With sessions as blocks (before) Friedman rejected 22.4% of null comparisons (10 personas x 3 replicates x 3 runs)."""
    rng = np.random.default_rng(101)
    values = scores(rng, 1000)
    conditions = ["c0", "c1", "c2"]
    rejected = np.mean([friedman(frame(v), conditions).p_value < 0.05 for v in values])
    sessions = values.transpose(0, 1, 3, 2).reshape(len(values), -1, 3)  # blocks = persona x replicate
    before = np.mean(stats.friedmanchisquare(*sessions.transpose(2, 0, 1), axis=1).pvalue < 0.05)
    assert 0.02 <= rejected <= 0.08, rejected
    assert before > 0.15, before


def test_sign_test_and_wilson_interval_over_personas_hold_their_level():
    """12 personas (with 10 the exact sign test can only reach size 0.021): before, sessions as units, 13.5% rejection."""
    rng = np.random.default_rng(102)
    personas, datasets = 12, 2000
    values = scores(rng, datasets, personas=personas, conditions=2)
    keys = [f"p{i}#{r}" for i in range(personas) for r in range(REPLICATES)]
    rejected = covered = before = 0
    for v in values:
        result = head_to_head(pd.Series(v[:, 1].ravel(), index=keys), pd.Series(v[:, 0].ravel(), index=keys), "higher")
        rejected += result.sign_test_p < 0.05
        covered += result.ci_low <= 0.5 <= result.ci_high
        before += stats.binomtest(result.session_wins, result.session_wins + result.session_losses).pvalue < 0.05
    assert 0.02 <= rejected / datasets <= 0.08, rejected / datasets
    assert covered / datasets >= 0.93, covered / datasets
    assert before / datasets > 0.08, before / datasets
    # With a true difference: the truth is P(a persona's mean difference > 0) = Phi(0.2 / sd of persona-mean differences).
    shifted = scores(rng, datasets, personas=personas, conditions=2, effects=np.array([0.0, 0.2]))
    truth = stats.norm.cdf(0.2 / np.sqrt(2 * INTERACTION_SD**2 + 2 * RESIDUAL_SD**2 / REPLICATES))
    hits = [(r.ci_low <= truth <= r.ci_high) for r in (head_to_head(pd.Series(v[:, 1].ravel(), index=keys),
                                                                    pd.Series(v[:, 0].ravel(), index=keys), "higher")
                                                       for v in shifted[:1000])]
    assert np.mean(hits) >= 0.93, np.mean(hits)


def test_bradley_terry_intervals_clustered_by_persona_cover_the_truth():
    """Before (sessions resampled, a prior on the strengths) the 95% intervals covered the truth 83.4% of the time."""
    rng = np.random.default_rng(103)
    conditions = ["c0", "c1", "c2"]
    covered = []
    for v in scores(rng, 400):
        fit = bradley_terry(pairwise_outcomes(frame(v), conditions, "higher"), conditions)
        covered += [fit.strengths[c].ci_low <= 0.0 <= fit.strengths[c].ci_high for c in conditions[1:]]
    assert np.mean(covered) >= 0.93, np.mean(covered)


def test_rating_chi_square_with_within_persona_permutation_holds_its_level():
    rng = np.random.default_rng(104)
    conditions = ["c0", "c1", "c2"]
    rejected = before = 0
    datasets = 400
    for v in scores(rng, datasets):
        data = frame(v)
        ratings = data.assign(rating=np.digitize(data["value"], [-0.6, 0.0, 0.6]))
        result = rating_counts_chi2(ratings, conditions, permutations=199, seed=int(rng.integers(1 << 30)))
        rejected += result.p_value < 0.05
        before += stats.chi2_contingency(np.array(result.counts), correction=False)[1] < 0.05
    assert 0.02 <= rejected / datasets <= 0.08, rejected / datasets
    assert before / datasets > 0.075, before / datasets


def test_familywise_error_over_the_primary_family_stays_at_alpha():
    """Three correlated primary metrics (they share the persona effects) with no true difference: Holm over the family's
    omnibus tests and over its pairwise contrasts. Unadjusted, some primary result had p < 0.05 in about 1 in 8."""
    rng = np.random.default_rng(105)
    conditions = ["c0", "c1", "c2"]
    datasets = 150
    any_omnibus = any_contrast = unadjusted = 0
    for _ in range(datasets):
        shared = rng.normal(0, PERSONA_SD, (PERSONAS, 1, 1))
        fits = [fit_mixed_model(frame(shared + rng.normal(0, INTERACTION_SD, (PERSONAS, 3, 1))
                                      + rng.normal(0, RESIDUAL_SD, (PERSONAS, 3, REPLICATES))), conditions) for _ in range(3)]
        omnibus = [f.p_value for f in fits]
        contrasts = [c.p for f in fits for c in f.contrasts]
        any_omnibus += min(holm(omnibus)) < 0.05
        any_contrast += min(holm(contrasts)) < 0.05
        unadjusted += min(omnibus) < 0.05
    assert any_omnibus / datasets <= 0.06, any_omnibus / datasets
    assert any_contrast / datasets <= 0.06, any_contrast / datasets
    assert unadjusted / datasets > 0.09, unadjusted / datasets


# --- plan ---------------------------------------------------------------------------------------------------------


def gate_pass_rate(rng: np.random.Generator, personas: int, replicates: int, var_between: float, var_within: float,
                   datasets: int = 4000) -> float:
    """P(pass) of an equal candidate (a different model: its persona x model effects independent of the baseline's)."""
    drop = (rng.normal(0, np.sqrt(var_between), (datasets, personas, 1))
            + rng.normal(0, np.sqrt(var_within), (datasets, personas, replicates))).reshape(datasets, -1)
    labels = [f"p{i}" for i in range(personas) for _ in range(replicates)]
    return float(np.mean([decide(row, MARGIN, ALPHA, POWER, personas=labels).verdict == "pass" for row in drop]))


def test_the_planned_design_attains_its_stated_pass_probability():
    """plan in personas x replicates, from the variance components the gate's test sees, at two replicate counts."""
    rng = np.random.default_rng(106)
    between, within = 2 * INTERACTION_SD**2, 2 * RESIDUAL_SD**2
    for replicates in (1, 3):
        planned = plan(MARGIN, var_between=between, var_within=within, replicates=replicates, alpha=ALPHA, power=POWER)
        attained = gate_pass_rate(rng, planned.n_pass, replicates, between, within)
        assert abs(attained - planned.power_pass_at_n_pass) <= 0.05, (replicates, planned.n_pass, attained)


def planned_personas(d: np.ndarray, labels: list[str]) -> tuple[int, float]:
    """What plan_from_differences answers for an equal candidate (its n_pass and SD), without the 'detect' search."""
    between, within, _, replicates = variance_components(d, labels)
    sd = float(np.sqrt(between + within / round(replicates)))
    return sessions_needed(sd, MARGIN, ALPHA, POWER), sd


def test_planning_from_a_repeat_of_one_model_is_far_too_small_and_from_two_models_is_right_on_average():
    """A repeat of the baseline cancels the persona x model variance: plan said 3 personas where 21 were needed and an
    equal candidate passed 17% of the time. From two different models' runs (a 20-persona pilot, 3 replicates) the
    attained probability, averaged over pilots, is within 5 points of what the plan states."""
    rng = np.random.default_rng(107)
    between, within, pilots, personas = 2 * INTERACTION_SD**2, 2 * RESIDUAL_SD**2, 200, 20
    labels = [f"p{i}" for i in range(personas) for _ in range(REPLICATES)]
    stated, attained, repeat = [], [], []
    true_sd = np.sqrt(between + within / REPLICATES)
    for _ in range(pilots):
        # Two different models: each persona's true drop varies (var_between); sessions add var_within.
        d = (rng.normal(0, np.sqrt(between), (personas, 1)) + rng.normal(0, np.sqrt(within), (personas, REPLICATES))).ravel()
        n, sd = planned_personas(d, labels)
        stated.append(pass_probability(n, sd, MARGIN, ALPHA))
        attained.append(pass_probability(n, true_sd, MARGIN, ALPHA))
        # A repeat of one model: only the session noise differs between the two runs.
        repeat.append(pass_probability(planned_personas(rng.normal(0, np.sqrt(within), personas * REPLICATES), labels)[0],
                                       true_sd, MARGIN, ALPHA))
    assert abs(np.mean(attained) - np.mean(stated)) <= 0.05, (np.mean(attained), np.mean(stated))
    assert np.mean(repeat) < 0.6, np.mean(repeat)


# --- the critical-failure share ------------------------------------------------------------------------------------


def test_critical_failure_interval_clustered_by_persona_covers_the_share():
    """21 risk personas x 3 replicates; each persona's failure probability varies (Beta, mean 0.15). Plain Wilson on
    sessions (before) undercovers; the interval on the effective sample size does not."""
    rng = np.random.default_rng(108)
    personas, mean, concentration, datasets = 21, 0.15, 2.0, 2000
    labels = [f"p{i}" for i in range(personas) for _ in range(REPLICATES)]
    covered = plain = 0
    for _ in range(datasets):
        p = rng.beta(mean * concentration, (1 - mean) * concentration, personas)
        y = (rng.random((personas, REPLICATES)) < p[:, None]).astype(float).ravel()
        _, low, high, _ = clustered_proportion_ci(y, labels)
        covered += low <= mean <= high
        low, high = proportion_confint(y.sum(), len(y), method="wilson")
        plain += low <= mean <= high
    assert covered / datasets >= 0.93, covered / datasets
    assert plain / datasets < 0.92, plain / datasets
