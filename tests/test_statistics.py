"""Every statistic is checked against a computation independent of the code under test:
closed-form ANOVA for balanced designs (with and without replicates), lme4's reference fits that statsmodels
ships (logLik, variance components, fixed effects, vcov; Pastes), rank formulas on persona means, the binomial
distribution, Wilson's formula, exact enumeration of within-persona permutations, Hunter's MM algorithm and a
cluster-robust sandwich written out by hand for Bradley-Terry, scipy's one-sample t for the gate, one-way ANOVA
for the plan's variance components, Holm's procedure by hand, and Newton-Raphson for the logistic model.
Error rates: test_statistics_simulation.py."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels
from scipy import stats
from statsmodels.regression.mixed_linear_model import MixedLM

from evalkit.statistics.mixed import NotEstimable, build_model, design, fit_mixed_model, lme4_covariance
from evalkit.statistics.multiplicity import holm
from evalkit.statistics.noninferiority import (
    decide,
    persona_of,
    plan,
    plan_from_differences,
    sessions_needed,
    variance_components,
)
from evalkit.statistics.nonparametric import cohens_d, friedman, kruskal_wallis, rank_biserial, rating_counts_chi2
from evalkit.statistics.proportion import clustered_proportion_ci
from evalkit.statistics.reml import ProfiledReml, reml_fit
from evalkit.statistics.winrate import (
    bradley_terry,
    clustered_outcomes,
    head_to_head,
    length_controlled_win_rate,
    strongly_connected,
    win_summary,
)

from .conftest import assert_one_line_error, run_cli
from .synthetic_runs import write_run

CONDITIONS = ["instruct", "sft", "orpo"]


def balanced_data(personas=8, replicates=3, seed=3, interaction_sd=0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    effects = {"instruct": 0.0, "sft": 0.3, "orpo": 0.9}
    persona_effect = rng.normal(0, 0.7, personas)
    interaction = rng.normal(0, interaction_sd, (personas, len(CONDITIONS))) if interaction_sd else np.zeros((personas, 3))
    rows = [{"condition": c, "persona": f"p{p}", "session": f"p{p}#{r}",
             "value": 2.0 + effects[c] + persona_effect[p] + interaction[p, j] + rng.normal(0, 0.5)}
            for j, c in enumerate(CONDITIONS) for p in range(personas) for r in range(replicates)]
    return pd.DataFrame(rows)


def anova_components(data: pd.DataFrame):
    """Classical two-way additive ANOVA (persona random, condition fixed), balanced design, by hand."""
    y = data["value"].to_numpy()
    grand = y.mean()
    n_total = len(y)
    k = data["condition"].nunique()
    p = data["persona"].nunique()
    cond_means = data.groupby("condition")["value"].mean()
    pers_means = data.groupby("persona")["value"].mean()
    ss_cond = sum((data["condition"] == c).sum() * (m - grand) ** 2 for c, m in cond_means.items())
    ss_pers = sum((data["persona"] == q).sum() * (m - grand) ** 2 for q, m in pers_means.items())
    ss_err = ((y - grand) ** 2).sum() - ss_cond - ss_pers
    ms_err = ss_err / (n_total - k - p + 1)
    ms_pers = ss_pers / (p - 1)
    per_persona = n_total // p
    var_u = (ms_pers - ms_err) / per_persona
    return cond_means, ms_err, var_u, n_total // (k * p)


def anova_with_interaction(data: pd.DataFrame):
    """Balanced two-way ANOVA with replicates (persona random, condition fixed, persona x condition random), by hand:
    mean squares and the expected-mean-square estimators of the variance components."""
    y = data["value"].to_numpy()
    grand = y.mean()
    k, p = data["condition"].nunique(), data["persona"].nunique()
    r = len(y) // (k * p)
    cond = data.groupby("condition")["value"].mean()
    pers = data.groupby("persona")["value"].mean()
    cell = data.groupby(["persona", "condition"])["value"].mean()
    ss_c = p * r * ((cond - grand) ** 2).sum()
    ss_p = k * r * ((pers - grand) ** 2).sum()
    ss_cells = r * ((cell - grand) ** 2).sum()
    ss_pc = ss_cells - ss_c - ss_p
    ss_e = ((y - data.groupby(["persona", "condition"])["value"].transform("mean").to_numpy()) ** 2).sum()
    ms = {"c": ss_c / (k - 1), "p": ss_p / (p - 1), "pc": ss_pc / ((p - 1) * (k - 1)), "e": ss_e / (p * k * (r - 1))}
    var = {"e": ms["e"], "pc": (ms["pc"] - ms["e"]) / r, "p": (ms["p"] - ms["pc"]) / (k * r)}
    return cond, ms, var, (k, p, r)


def holm_sidak_by_hand(raw: list[float]) -> np.ndarray:
    m = len(raw)
    order = np.argsort(raw)
    adjusted, running = np.empty(m), 0.0
    for rank, idx in enumerate(order):
        running = max(running, 1 - (1 - raw[idx]) ** (m - rank))
        adjusted[idx] = min(running, 1.0)
    return adjusted


def test_mixed_model_with_replicates_matches_balanced_anova():
    data = balanced_data(personas=8, replicates=3, seed=3, interaction_sd=0.4)
    fit = fit_mixed_model(data, CONDITIONS)
    cond, ms, var, (k, p, r) = anova_with_interaction(data)
    assert min(var.values()) > 0  # interior: REML equals the ANOVA (expected-mean-square) estimators
    assert fit.persona_condition_term and fit.converged and fit.cells == k * p
    assert "(1|persona:condition)" in fit.formula and "(X'V^-1X)^-1" in fit.method
    assert fit.var_residual == pytest.approx(var["e"], rel=1e-6)
    assert fit.var_persona_condition == pytest.approx(var["pc"], rel=1e-6)
    assert fit.var_persona == pytest.approx(var["p"], rel=1e-6)
    # Omnibus: F = MS_condition / MS_persona:condition on (k-1, (p-1)(k-1)) df, the exact balanced-design test.
    f = ms["c"] / ms["pc"]
    assert fit.df == k - 1 and fit.df_denominator == (p - 1) * (k - 1)
    assert fit.f_statistic == pytest.approx(f, rel=1e-6) and fit.wald_chi2 == pytest.approx((k - 1) * f, rel=1e-6)
    assert fit.p_value == pytest.approx(stats.f.sf(f, k - 1, (p - 1) * (k - 1)), rel=1e-5)
    assert fit.p_value_chi2 == pytest.approx(stats.chi2.sf((k - 1) * f, k - 1), rel=1e-5)
    # Contrasts: SE sqrt(2 MS_pc / (p r)), t on the interaction df; EMMs: SE sqrt((MS_p + (k-1) MS_pc) / (k p r)), t(p-1).
    se_diff = math.sqrt(2 * ms["pc"] / (p * r))
    for row in fit.contrasts:
        estimate = cond[row.a] - cond[row.b]
        assert row.estimate == pytest.approx(estimate, abs=1e-6) and row.se == pytest.approx(se_diff, rel=1e-6)
        assert row.df == (p - 1) * (k - 1) and row.p == pytest.approx(2 * stats.t.sf(abs(estimate) / se_diff, row.df), rel=1e-5)
    assert [row.p_holm_sidak for row in fit.contrasts] == pytest.approx(holm_sidak_by_hand([row.p for row in fit.contrasts]),
                                                                      abs=1e-9)
    se_emm = math.sqrt((ms["p"] + (k - 1) * ms["pc"]) / (k * p * r))
    for c in CONDITIONS:
        emm = fit.emms[c]
        assert emm.mean == pytest.approx(cond[c], abs=1e-6) and emm.se == pytest.approx(se_emm, rel=1e-6)
        assert emm.ci_high - emm.mean == pytest.approx(stats.t.ppf(0.975, p - 1) * se_emm, rel=1e-6)
    # ICCs and Nakagawa & Schielzeth R-squared with the extra component.
    var_f = np.var(data["condition"].map(cond).to_numpy())
    random = var["p"] + var["pc"] + var["e"]
    assert fit.icc == pytest.approx(var["p"] / random, rel=1e-6)
    assert fit.icc_persona_condition == pytest.approx((var["p"] + var["pc"]) / random, rel=1e-6)
    assert fit.r2_marginal == pytest.approx(var_f / (var_f + random), rel=1e-6)
    assert fit.r2_conditional == pytest.approx((var_f + var["p"] + var["pc"]) / (var_f + random), rel=1e-6)


def test_mixed_model_without_replicates_matches_additive_anova():
    """One session per persona x condition: the interaction cannot be told from the residual, so the model is
    (1|persona) and the test is the randomised-block F with (k-1)(p-1) error df."""
    data = balanced_data(personas=8, replicates=1, seed=3)
    fit = fit_mixed_model(data, CONDITIONS)
    cond_means, var_e, var_u, replicates = anova_components(data)
    personas = data["persona"].nunique()
    assert not fit.persona_condition_term and fit.var_persona_condition is None and fit.icc_persona_condition is None
    assert "not identifiable" in fit.method
    # Variance components: REML equals the ANOVA estimators in a balanced design.
    assert fit.var_residual == pytest.approx(var_e, rel=1e-6)
    assert fit.var_persona == pytest.approx(var_u, rel=1e-6)
    assert fit.icc == pytest.approx(var_u / (var_u + var_e), rel=1e-6)
    # EMMs are the condition means; contrasts are within-persona, so persona variance cancels.
    for c in CONDITIONS:
        assert fit.emms[c]["mean"] == pytest.approx(cond_means[c], abs=1e-6)
    m = personas * replicates  # observations per condition
    d = np.array([cond_means[c] - cond_means[CONDITIONS[0]] for c in CONDITIONS[1:]])
    cov = var_e / m * (np.eye(2) + np.ones((2, 2)))
    wald = d @ np.linalg.solve(cov, d)
    assert fit.df == 2 and fit.df_denominator == (personas - 1) * 2
    assert fit.wald_chi2 == pytest.approx(wald, rel=1e-6)
    assert fit.p_value == pytest.approx(stats.f.sf(wald / 2, 2, (personas - 1) * 2), rel=1e-6)
    assert fit.p_value_chi2 == pytest.approx(stats.chi2.sf(wald, 2), rel=1e-6)
    se_diff = math.sqrt(2 * var_e / m)
    for row in fit.contrasts:
        assert row["estimate"] == pytest.approx(cond_means[row["a"]] - cond_means[row["b"]], abs=1e-6)
        assert row["se"] == pytest.approx(se_diff, rel=1e-6)
    assert [row["p_holm_sidak"] for row in fit.contrasts] == pytest.approx(
        holm_sidak_by_hand([row["p"] for row in fit.contrasts]), abs=1e-9)
    var_f = np.var(data["condition"].map(cond_means).to_numpy())
    total = var_f + var_u + var_e
    assert fit.r2_marginal == pytest.approx(var_f / total, rel=1e-6)
    assert fit.r2_conditional == pytest.approx((var_f + var_u) / total, rel=1e-6)


LME4_RESULTS = Path(statsmodels.__file__).parent / "regression" / "tests" / "results"


@pytest.mark.parametrize("dataset", [0, 1, 2, 3, 4, 5])
def test_reml_and_covariance_match_lme4_reference(dataset):
    """statsmodels ships lme4's REML fits of these unbalanced data sets (1-5 observations per group, random intercept
    or random slope): our REML optimum and lme4-equivalent covariance must reproduce lmer's logLik and vcov()."""
    from statsmodels.regression.tests.results import lme_r_results as lme4

    data = pd.read_csv(LME4_RESULTS / f"lme{dataset:02d}.csv")
    fe = [c for c in data if c.startswith("exog_fe")]
    re = [c for c in data if c.startswith("exog_re")]
    model = MixedLM(data["endog"].to_numpy(), data[fe].to_numpy(), groups=data["groups"].to_numpy(), exog_re=data[re].to_numpy())
    result, _, tried, _, converged = reml_fit(model)
    assert converged and result.llf == max(v for v in tried.values() if v is not None)
    assert result.llf == pytest.approx(getattr(lme4, f"loglike_reml_drf_{dataset}")[0], abs=1e-4)
    assert result.scale == pytest.approx(getattr(lme4, f"scale_reml_drf_{dataset}")[0], rel=1e-5)
    assert np.asarray(result.fe_params) == pytest.approx(getattr(lme4, f"coef_reml_drf_{dataset}"), rel=1e-5, abs=1e-6)
    assert lme4_covariance(result) == pytest.approx(getattr(lme4, f"vcov_reml_drf_{dataset}"), rel=1e-5)


@pytest.mark.parametrize("dataset", [0, 1, 2, 3, 4, 5])
def test_profiled_reml_deviance_reproduces_lme4_loglik_at_lme4_estimates(dataset):
    """The fast deviance that locates the optimum, evaluated at lmer's own estimates (theta = Cholesky factor of
    cov_re / scale), gives lmer's -2 x REML logLik."""
    from statsmodels.regression.tests.results import lme_r_results as lme4

    data = pd.read_csv(LME4_RESULTS / f"lme{dataset:02d}.csv")
    fe = [c for c in data if c.startswith("exog_fe")]
    re = [c for c in data if c.startswith("exog_re")]
    model = MixedLM(data["endog"].to_numpy(), data[fe].to_numpy(), groups=data["groups"].to_numpy(), exog_re=data[re].to_numpy())
    cov_re = np.atleast_2d(getattr(lme4, f"cov_re_reml_drf_{dataset}")) / getattr(lme4, f"scale_reml_drf_{dataset}")[0]
    theta = np.linalg.cholesky(cov_re)[np.tril_indices(len(cov_re))]
    lme4_loglik = getattr(lme4, f"loglike_reml_drf_{dataset}")[0]
    assert -ProfiledReml(model).deviance(theta) / 2 == pytest.approx(lme4_loglik, abs=1e-3)
    # Its optimum is at least as high as lmer's (the reference values are rounded to 4 decimals).
    optimum = ProfiledReml(model).optimum()
    assert -ProfiledReml(model).deviance(optimum) / 2 >= lme4_loglik - 1e-4


def test_pastes_variance_components_match_lme4_and_nested_anova():
    """lme4's Pastes data: strength ~ 1 + (1|batch) + (1|batch:cask), the structure of (1|persona) + (1|persona:condition).
    lmer (REML): intercept 60.0533, SE 0.6769, batch 1.657, cask in batch 8.434, residual 0.678; the design is
    balanced, so the nested ANOVA estimators are exact too."""
    data = pd.read_csv(LME4_RESULTS / "pastes.csv")
    codes = pd.Categorical(data["cask"]).codes.astype(int)
    model = build_model(data["strength"].to_numpy(float), np.ones((len(data), 1)), data["batch"].to_numpy(), codes, 3, True)
    result, _, _, _, converged = reml_fit(model)
    se = math.sqrt(lme4_covariance(result)[0, 0])
    assert converged
    assert (float(result.fe_params[0]), se) == pytest.approx((60.0533, 0.6769), rel=1e-4)
    assert (float(result.cov_re[0, 0]), float(result.vcomp[0]), result.scale) == pytest.approx((1.657, 8.434, 0.678), rel=1e-3)
    # Nested ANOVA: 10 batches x 3 casks x 2 samples.
    y = data["strength"]
    cell = data.groupby(["batch", "cask"])["strength"].transform("mean")
    batch = data.groupby("batch")["strength"].transform("mean")
    ms_e = ((y - cell) ** 2).sum() / (30 * 1)
    ms_cask = ((cell - batch) ** 2).sum() / (10 * 2)
    ms_batch = ((batch - y.mean()) ** 2).sum() / 9
    assert result.scale == pytest.approx(ms_e, rel=1e-6)
    assert float(result.vcomp[0]) == pytest.approx((ms_cask - ms_e) / 2, rel=1e-6)
    assert float(result.cov_re[0, 0]) == pytest.approx((ms_batch - ms_cask) / 6, rel=1e-6)
    assert se == pytest.approx(math.sqrt(ms_batch / 60), rel=1e-6)


def test_unbalanced_fit_reaches_the_optimum_and_says_how():
    data = balanced_data(personas=10, replicates=3, seed=8, interaction_sd=0.3)
    data = data.drop(index=data.sample(frac=0.2, random_state=1).index)  # unbalanced: 20% of sessions missing
    fit = fit_mixed_model(data, CONDITIONS)
    assert fit.converged and not any("fail" in w.lower() for w in fit.warnings)
    assert fit.reml_loglik == pytest.approx(max(v for v in fit.optimizers_tried.values() if v is not None), abs=1e-9)
    assert fit.optimizer in fit.optimizers_tried and fit.covariance == "lme4"
    hessian = fit_mixed_model(data, CONDITIONS, covariance="statsmodels")
    assert hessian.covariance == "statsmodels" and "Hessian" in hessian.method
    assert hessian.reml_loglik == pytest.approx(fit.reml_loglik, abs=1e-9)


def test_located_optimum_is_never_below_statsmodels_own_optimisers():
    """On 16 unbalanced data sets, half with no persona x condition variance (optimum often on the boundary), the
    fit located on the profiled deviance reaches at least the best REML log-likelihood of statsmodels' five
    optimisers and start values (to 1e-6, the cost of stopping a boundary component at sqrt 1e-4)."""
    for seed in range(16):
        data = balanced_data(personas=6 + seed % 5, replicates=2 + seed % 2, seed=100 + seed, interaction_sd=0.3 * (seed % 2))
        data = data.drop(index=data.sample(frac=0.15, random_state=seed).index)
        codes = pd.Categorical(data["condition"], categories=CONDITIONS).codes.astype(int)
        model = build_model(data["value"].to_numpy(float), design(data, CONDITIONS), data["persona"].to_numpy(), codes, 3, True)
        located, name, _, _, converged = reml_fit(model)
        alone = reml_fit(model, locate=False)[0]
        assert converged and name.startswith("profiled")
        assert located.llf >= alone.llf - 1e-6, seed


def test_nonparametric_results_say_why_they_are_absent():
    data = balanced_data(personas=6, replicates=1, seed=11)
    data.loc[data["condition"] == "orpo", "value"] = np.nan
    for result in (friedman(data, CONDITIONS), kruskal_wallis(data, CONDITIONS)):
        assert not result and "no valid scores for orpo" in result.absent_reason and result.p_value is None
        assert result.method
    two = friedman(data, CONDITIONS[:2])
    assert not two and "three or more" in two.absent_reason
    ratings = pd.DataFrame({"condition": ["a", "a"], "rating": [1, 2]})
    absent = rating_counts_chi2(ratings, ["a", "b"])
    assert not absent and "no valid ratings for b" in absent.absent_reason


def test_friedman_and_kruskal_wallis_from_rank_formulas():
    data = balanced_data(personas=6, replicates=1, seed=11)
    wide = data.pivot(index="session", columns="condition", values="value")[CONDITIONS]
    ranks = wide.rank(axis=1)
    n, k = wide.shape
    q = 12 / (n * k * (k + 1)) * (ranks.sum() ** 2).sum() - 3 * n * (k + 1)
    result = friedman(data, CONDITIONS)
    assert result["chi2"] == pytest.approx(q, rel=1e-9) and result["df"] == 2 and result["blocks"] == 6

    overall = data["value"].rank()
    big_n = len(data)
    h = 12 / (big_n * (big_n + 1)) * sum(overall[data["condition"] == c].sum() ** 2 / (data["condition"] == c).sum()
                                         for c in CONDITIONS) - 3 * (big_n + 1)
    kw = kruskal_wallis(data, CONDITIONS)
    assert kw["h"] == pytest.approx(h, rel=1e-9) and kw["p_value"] == pytest.approx(stats.chi2.sf(h, 2), rel=1e-9)


def test_friedman_blocks_are_personas_with_their_replicates_averaged():
    data = balanced_data(personas=7, replicates=3, seed=12, interaction_sd=0.4)
    data = data.drop(index=data.index[[0, 5]])  # unequal replicates: a persona mean is over what is there
    means = {c: [data[(data["persona"] == f"p{p}") & (data["condition"] == c)]["value"].mean() for p in range(7)] for c in CONDITIONS}
    ranks = pd.DataFrame(means).rank(axis=1)
    n, k = 7, 3
    q = 12 / (n * k * (k + 1)) * (ranks.sum() ** 2).sum() - 3 * n * (k + 1)
    result = friedman(data, CONDITIONS)
    assert result.blocks == 7 and result.unit == "persona" and result.chi2 == pytest.approx(q, rel=1e-9)
    assert result.p_value == pytest.approx(stats.chi2.sf(q, 2), rel=1e-9)


def test_rating_count_chi_square_by_hand_with_an_exact_within_persona_permutation_p():
    """The statistic is Pearson's on the condition x level counts; its p comes from permuting conditions within persona.
    With 2 conditions and 4 personas there are 2^4 = 16 such permutations, which scipy enumerates: the p must equal the
    share of them (by hand, below) whose chi-square is at least the observed one."""
    rows = {"p1": ([1, 1, 2], [2, 3, 3]), "p2": ([2, 3], [1, 1]), "p3": ([3, 3, 3], [1, 2, 2]), "p4": ([1, 2], [3, 2])}
    ratings = pd.DataFrame([{"condition": c, "persona": p, "rating": r} for p, (a, b) in rows.items()
                            for c, values in (("a", a), ("b", b)) for r in values])
    result = rating_counts_chi2(ratings, ["a", "b"])

    def chi2(table):
        table = np.asarray(table, float)
        expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
        return ((table - expected) ** 2 / expected).sum()

    def counts(assign):  # assign[p] = 0 keeps p's cells, 1 swaps them
        table = np.zeros((2, 3))
        for (_, (a, b)), swap in zip(rows.items(), assign, strict=True):
            for row, values in enumerate((b, a) if swap else (a, b)):
                for v in values:
                    table[row, v - 1] += 1
        return table

    observed = counts([0, 0, 0, 0])
    assert result.counts == observed.astype(int).tolist() and result.df == 2 and result.unit == "persona"
    assert result.chi2 == pytest.approx(chi2(observed), rel=1e-12)
    assert result.chi2 == pytest.approx(stats.chi2_contingency(observed, correction=False)[0], rel=1e-12)
    every = [chi2(counts(assign)) for assign in itertools.product([0, 1], repeat=4)]
    assert result.p_value == pytest.approx(np.mean([x >= chi2(observed) - 1e-9 for x in every]), abs=1e-12)


def test_effect_sizes_by_definition():
    a, b = np.array([3.1, 2.4, 4.0, 3.3, 2.9]), np.array([2.2, 2.9, 1.8, 2.5])
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    assert cohens_d(a, b) == pytest.approx((a.mean() - b.mean()) / pooled, rel=1e-12)
    greater = sum(x > y for x, y in itertools.product(a, b))
    less = sum(x < y for x, y in itertools.product(a, b))
    assert rank_biserial(a, b) == pytest.approx((greater - less) / (len(a) * len(b)), rel=1e-12)


def test_head_to_head_sign_test_and_wilson_by_hand():
    """One session per persona: persona units are the sessions, so the classical sign test and Wilson interval apply."""
    candidate = pd.Series({"s1": 3.0, "s2": 2.5, "s3": 4.0, "s4": 1.0, "s5": 3.3, "s6": 2.0, "s7": 5.0})
    baseline = pd.Series({"s1": 2.0, "s2": 2.5, "s3": 3.0, "s4": 2.0, "s5": 3.0, "s6": 1.0, "s7": 4.0, "s8": 1.0})
    result = head_to_head(candidate, baseline, "higher")
    assert (result["wins"], result["losses"], result["ties"], result["matched"]) == (5, 1, 1, 7)
    assert result.unit == "persona" and (result.session_wins, result.session_losses, result.session_ties) == (5, 1, 1)
    n, w = 6, 5
    p_exact = min(1.0, 2 * sum(math.comb(n, i) for i in range(0, min(w, n - w) + 1)) / 2**n)
    assert result["sign_test_p"] == pytest.approx(p_exact, rel=1e-12)
    z, phat = stats.norm.ppf(0.975), w / n
    centre = (phat + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(phat * (1 - phat) / n + z**2 / (4 * n**2))
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((centre - half, centre + half), rel=1e-9)
    assert result["win_rate_ties_half"] == pytest.approx(5.5 / 7)
    lower_better = head_to_head(candidate, baseline, "lower")
    assert (lower_better["wins"], lower_better["losses"]) == (1, 5)
    assert win_summary(0, 0, 3)["win_rate"] is None


def test_head_to_head_counts_personas_not_sessions():
    """Replicates of a persona are one unit: a persona is won on the mean of its matched sessions' differences."""
    diffs = {"a": [0.5, 0.4, -0.1], "b": [0.2, 0.3, 0.1], "c": [-0.4, 0.1, -0.2], "d": [0.0, 0.0, 0.0], "e": [0.3, -0.1, 0.1]}
    baseline = pd.Series({f"{p}#{r}": 2.0 for p, ds in diffs.items() for r in range(3)})
    candidate = pd.Series({f"{p}#{r}": 2.0 + d for p, ds in diffs.items() for r, d in enumerate(ds)})
    result = head_to_head(candidate, baseline, "higher")
    means = {p: np.mean(ds) for p, ds in diffs.items()}  # a .27, b .2, c -.17, d 0, e .1
    assert (result.wins, result.losses, result.ties) == (sum(m > 0 for m in means.values()), sum(m < 0 for m in means.values()), 1)
    assert (result.wins, result.losses) == (3, 1) and result.matched == 15
    assert (result.session_wins, result.session_losses, result.session_ties) == (8, 4, 3)
    assert result.sign_test_p == pytest.approx(stats.binomtest(3, 4).pvalue)
    # The pairwise judge's per-session outcomes are summarised the same way: more won sessions than lost wins a persona.
    outcomes = {"a#0": "win", "a#1": "loss", "a#2": "win", "b#0": "loss", "b#1": "tie", "c#0": "win", "c#1": "loss"}
    summary = clustered_outcomes(outcomes)
    assert (summary.wins, summary.losses, summary.ties) == (1, 1, 1) and summary.session_wins == 3


def test_bradley_terry_matches_hunters_mm_algorithm_and_a_hand_written_cluster_sandwich():
    rng = np.random.default_rng(5)
    models = ["a", "b", "c", "d"]
    true = {"a": 0.0, "b": 0.5, "c": 1.0, "d": -0.4}
    rows = []
    for session in range(60):
        for x, y in itertools.combinations(models, 2):
            p = 1 / (1 + math.exp(-(true[x] - true[y])))
            winner, loser = (x, y) if rng.random() < p else (y, x)
            rows.append({"session": f"p{session // 3}#{session % 3}", "persona": f"p{session // 3}", "winner": winner, "loser": loser})
    outcomes = pd.DataFrame(rows)
    ours = bradley_terry(outcomes, models)
    assert ours and ours.converged and not ours.separated and ours.personas == 20 and ours.df == 19 and ours.unit == "persona"
    # Hunter (2004) MM updates: pi_i <- W_i / sum_j n_ij / (pi_i + pi_j)
    wins = outcomes["winner"].value_counts().reindex(models).to_numpy(float)
    games = np.zeros((4, 4))
    for w_, l_ in zip(outcomes["winner"], outcomes["loser"], strict=True):
        i, j = models.index(w_), models.index(l_)
        games[i, j] += 1
        games[j, i] += 1
    pi = np.ones(4)
    for _ in range(5000):
        pi = wins / (games / (pi[:, None] + pi[None, :])).sum(axis=1)
        pi /= pi[0]
    theta = np.log(pi)
    assert [ours.strengths[m].strength for m in models] == pytest.approx(theta.tolist(), abs=1e-6)
    # CR1 sandwich by hand: per comparison the score of the log-likelihood in the free strengths (b, c, d), summed per
    # persona; bread = observed information; scaled by G/(G-1) (N-1)/(N-K); t(G-1) quantiles.
    x = np.zeros((len(outcomes), 3))
    for r, (w_, l_) in enumerate(zip(outcomes["winner"], outcomes["loser"], strict=True)):
        i, j = models.index(w_), models.index(l_)
        if i:
            x[r, i - 1] += 1
        if j:
            x[r, j - 1] -= 1
    p_win = 1 / (1 + np.exp(-(x @ theta[1:])))  # P(the recorded winner wins)
    score = x * (1 - p_win)[:, None]
    bread = np.linalg.inv((x * (p_win * (1 - p_win))[:, None]).T @ x)
    clusters = outcomes["persona"].to_numpy()
    meat = sum(np.outer(score[clusters == g].sum(0), score[clusters == g].sum(0)) for g in np.unique(clusters))
    n, g = len(outcomes), 20
    cov = bread @ meat @ bread * g / (g - 1) * (n - 1) / (n - 3)
    se = np.sqrt(np.diag(cov))
    q = stats.t.ppf(0.975, g - 1)
    for k, m in enumerate(models[1:]):
        s = ours.strengths[m]
        assert s.se == pytest.approx(se[k], rel=1e-6)
        assert (s.ci_low, s.ci_high) == pytest.approx((theta[k + 1] - q * se[k], theta[k + 1] + q * se[k]), rel=1e-6)


def test_bradley_terry_under_separation_reports_no_strength_and_no_interval():
    """The review's cases: a model that won every comparison (a prior made the interval: P(A beats B) 0.905 -> 1.000 as
    prior_sd went 0.5 -> 100), and every session with the same ordering (every interval of zero width)."""
    models = ["a", "b", "c", "top"]
    rows = [{"session": f"p{s}#0", "persona": f"p{s}", "winner": "top", "loser": other} for s in range(10) for other in "abc"]
    rows += [{"session": f"p{s}#0", "persona": f"p{s}", "winner": x, "loser": y}
             for s in range(10) for x, y in ((("a", "b"), ("b", "c"), ("c", "a")) if s % 2 else (("b", "a"), ("c", "b"), ("a", "c")))]
    fit = bradley_terry(pd.DataFrame(rows), models)
    assert not fit and fit.separated and fit.separated_models == ["top"] and "top won every comparison" in fit.absent_reason
    assert all(s.strength is None and s.ci_low is None and s.ci_high is None for s in fit.strengths.values())
    assert fit.strengths["top"].wins == 30 and fit.strengths["top"].losses == 0
    same_order = pd.DataFrame([{"session": f"p{s}#0", "persona": f"p{s}", "winner": x, "loser": y}
                               for s in range(12) for x, y in itertools.combinations(models, 2)])
    fit = bradley_terry(same_order, models)
    assert not fit and fit.separated and set(fit.separated_models) == {"a", "top"}
    assert all(s.ci_low is None for s in fit.strengths.values())


def test_separation_check_of_a_stack_matches_scipy_one_matrix_at_a_time():
    """Ford's condition for 2,000 random sparse win matrices at once equals scipy's strong-components count, taken
    one matrix at a time; about 1 in 10 of these is connected, so both answers occur often."""
    from scipy.sparse.csgraph import connected_components

    stack = np.random.default_rng(0).poisson(0.4, size=(2000, 4, 4)) * (1 - np.eye(4))
    one_at_a_time = [connected_components(w > 0, directed=True, connection="strong", return_labels=False) == 1 for w in stack]
    assert 100 < sum(one_at_a_time) < 1900
    assert strongly_connected(stack).tolist() == one_at_a_time
    assert strongly_connected(stack[0]) is bool(one_at_a_time[0])


def test_gate_decision_is_a_t_test_over_persona_means():
    rng = np.random.default_rng(12)
    keys = [f"u{p:02d}#{r}" for p in range(10) for r in range(3)]
    personas = [persona_of(k) for k in keys]
    d = np.repeat(rng.normal(0.05, 0.2, 10), 3) + rng.normal(0, 0.2, 30)
    result = decide(d, margin=0.25, alpha=0.05, power=0.8, personas=personas)
    means = pd.Series(d).groupby(personas).mean().to_numpy()
    test = stats.ttest_1samp(means, 0.0, alternative="less")
    upper = test.confidence_interval(0.95).high
    lower = stats.ttest_1samp(means, 0.0, alternative="greater").confidence_interval(0.95).low
    assert (result.n, result.personas, result.replicates, result.df) == (30, 10, 3.0, 9)
    assert result.upper_bound == pytest.approx(upper, rel=1e-12) and result.lower_bound == pytest.approx(lower, rel=1e-12)
    assert result.mean_drop == pytest.approx(means.mean()) and result.sd == pytest.approx(means.std(ddof=1))
    assert result.verdict == ("pass" if upper < 0.25 else "regression" if lower > 0 else "undecided")
    assert result.personas_needed == sessions_needed(means.std(ddof=1), 0.25, 0.05, 0.8)
    assert result.sessions_needed == 3 * result.personas_needed and "persona means" in result.method
    # Without persona labels every session is its own unit (the earlier analysis), and the method says so.
    alone = decide(d, margin=0.25, alpha=0.05, power=0.8)
    assert alone.personas == 30 and "treated as independent" in alone.method
    assert alone.upper_bound == pytest.approx(stats.ttest_1samp(d, 0.0, alternative="less").confidence_interval(0.95).high)


def test_gate_verdicts():
    personas = [f"p{i}" for i in range(12)]
    same = decide(np.linspace(-0.1, 0.1, 12), 0.25, 0.05, 0.8, personas=personas)
    assert same.verdict == "pass"
    worse = decide(np.linspace(0.5, 0.7, 12), 0.25, 0.05, 0.8, personas=personas)
    assert worse.verdict == "regression" and worse.lower_bound > 0
    few = decide(np.array([0.3, -0.4, 0.2]), 0.25, 0.05, 0.8, personas=["a", "b", "c"])
    assert few.verdict == "undecided" and f"{few.personas_needed} personas" in few.reason
    assert decide(np.array([0.1]), 0.25, 0.05, 0.8).verdict == "undecided"


def test_plan_gives_both_figures_in_personas_at_the_replicates_asked():
    # var_between 0.18, var_within 0.18: the persona-mean SD at 3 replicates is sqrt(0.18 + 0.06).
    result = plan(0.25, var_between=0.18, var_within=0.18, replicates=3)
    sd = math.sqrt(0.18 + 0.18 / 3)
    assert result.sd == pytest.approx(sd) and result.unit == "persona" and result.replicates == 3
    assert result.n_pass == sessions_needed(sd, 0.25, 0.05, 0.8) and result.sessions_pass == 3 * result.n_pass
    assert result.drop == 0.25 and result.n_detect is not None and result.power_detect_at_n_detect >= 0.8
    options = {o.replicates: o for o in result.options}
    assert set(options) == {1, 2, 3, 5} and options[3].personas_pass == result.n_pass
    assert options[1].personas_pass == sessions_needed(math.sqrt(0.36), 0.25, 0.05, 0.8)
    assert options[5].personas_pass <= options[3].personas_pass <= options[1].personas_pass
    assert plan(0.25, var_between=0.18, var_within=0.18, replicates=3, drop=0.5).n_detect < result.n_detect
    # At a drop of exactly one margin the chance of 'regression' tends to 1 - alpha, so power 0.97 is out of reach.
    out_of_reach = plan(0.25, var_between=0.25, power=0.97)
    assert out_of_reach.n_detect is None and "1 - alpha" in out_of_reach.note


def test_variance_components_of_differences_match_one_way_anova():
    """Balanced: REML of d ~ 1 + (1|persona) equals the one-way ANOVA estimators (when the between part is positive)."""
    rng = np.random.default_rng(3)
    personas = [f"u{p}" for p in range(12) for _ in range(3)]
    d = np.repeat(rng.normal(0, 0.5, 12), 3) + rng.normal(0, 0.3, 36)
    frame = pd.DataFrame({"d": d, "p": personas})
    means = frame.groupby("p")["d"].transform("mean")
    ms_within = ((frame["d"] - means) ** 2).sum() / (36 - 12)
    ms_between = 3 * ((frame.groupby("p")["d"].mean() - d.mean()) ** 2).sum() / 11
    between, within, known, replicates = variance_components(d, personas)
    assert known and replicates == 3 and (ms_between - ms_within) / 3 > 0
    assert within == pytest.approx(ms_within, rel=1e-6) and between == pytest.approx((ms_between - ms_within) / 3, rel=1e-6)
    clustered = plan_from_differences(d, 0.25, personas=personas)
    assert clustered.replicates == 3 and clustered.sd == pytest.approx(math.sqrt(between + within / 3))
    # One session per persona: the two parts cannot be told apart; all of it is counted between (conservative).
    single = variance_components(d[::3], personas[::3])
    assert single[1] == 0 and not single[2] and single[0] == pytest.approx(np.var(d[::3], ddof=1))


def test_holm_by_hand_and_a_missing_test_still_counts():
    raw = [0.01, 0.04, 0.03, None, 0.2]
    m = len(raw)
    filled = [1.0 if p is None else p for p in raw]
    order = np.argsort(filled)
    by_hand, running = np.empty(m), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * filled[index]))
        by_hand[index] = running
    adjusted = holm(raw)
    assert adjusted[3] is None
    assert [a for a in adjusted if a is not None] == pytest.approx([by_hand[i] for i in (0, 1, 2, 4)], abs=1e-12)


def test_clustered_proportion_interval_by_hand():
    """Wilson on the effective n: n_eff = p(1-p)/v (v the CR1 variance of the share by persona), times (z/t(G-1))^2."""
    outcomes = [1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    clusters = [f"p{i // 3}" for i in range(18)]
    share, low, high, n_eff = clustered_proportion_ci(outcomes, clusters)
    y, g = np.array(outcomes, float), 6
    p = y.mean()
    totals = np.array([(y[i * 3:(i + 1) * 3] - p).sum() for i in range(g)])
    v = g / (g - 1) * (len(y) - 1) / (len(y) - 1) * (totals**2).sum() / len(y) ** 2  # CR1 for an intercept-only OLS
    expected_n = min(len(y), p * (1 - p) / v) * (stats.norm.ppf(0.975) / stats.t.ppf(0.975, g - 1)) ** 2
    z = stats.norm.ppf(0.975)
    centre = (p + z**2 / (2 * expected_n)) / (1 + z**2 / expected_n)
    half = z / (1 + z**2 / expected_n) * math.sqrt(p * (1 - p) / expected_n + z**2 / (4 * expected_n**2))
    assert share == pytest.approx(p) and n_eff == pytest.approx(expected_n, rel=1e-9)
    assert (low, high) == pytest.approx((centre - half, centre + half), rel=1e-9)
    # No failure at all: every persona's sessions taken as one (n_eff = personas), the conservative end.
    _, low0, high0, n0 = clustered_proportion_ci([0] * 18, clusters)
    assert n0 == pytest.approx(6 * (z / stats.t.ppf(0.975, 5)) ** 2) and low0 == 0 and high0 > 0.3


def test_a_mixed_model_on_too_few_personas_is_not_estimable():
    """The review's case: one risk session per run gave F = 3204957.55 on (3, inf) df and near-zero-width CIs."""
    one_each = pd.DataFrame({"condition": ["a", "b", "c", "d"], "persona": ["p1", "p2", "p3", "p4"],
                             "session": ["p1#0", "p2#0", "p3#0", "p4#0"], "value": [0.0, 1.0, 0.0, 1.0]})
    with pytest.raises(NotEstimable, match="persona"):
        fit_mixed_model(one_each, ["a", "b", "c", "d"])
    two = balanced_data(personas=2, replicates=2, seed=1)
    with pytest.raises(NotEstimable, match="3 or more|containment"):
        fit_mixed_model(two, CONDITIONS)
    crossed = pd.DataFrame({"condition": ["a", "a", "b", "b", "a", "b"], "persona": ["p1", "p2", "p3", "p4", "p5", "p6"],
                            "session": [f"p{i}#0" for i in range(1, 7)], "value": [0.1, 0.4, 0.9, 0.3, 0.2, 0.7]})
    with pytest.raises(NotEstimable, match="containment df"):  # no persona seen in both conditions
        fit_mixed_model(crossed, ["a", "b"])


def test_length_controlled_win_rate_matches_newton_raphson():
    rng = np.random.default_rng(2)
    length_diff = rng.normal(0, 400, 80)
    outcomes = (rng.random(80) < 1 / (1 + np.exp(-(0.3 + length_diff / 500)))).astype(float)
    result = length_controlled_win_rate(outcomes, length_diff)
    x = np.column_stack([np.ones(80), length_diff / 1000])
    beta = np.zeros(2)
    for _ in range(50):
        p = 1 / (1 + np.exp(-x @ beta))
        beta += np.linalg.solve(x.T @ (x * (p * (1 - p))[:, None]), x.T @ (outcomes - p))
    assert result["intercept"] == pytest.approx(beta[0], abs=1e-6)
    assert result["win_rate_at_equal_length"] == pytest.approx(1 / (1 + math.exp(-beta[0])), abs=1e-6)



def test_length_controlled_win_rate_is_absent_when_every_length_difference_is_the_same():
    """Replies of fixed lengths: the length column equals the intercept, so no length effect can be estimated."""
    result = length_controlled_win_rate(np.array([1.0, 1, 1, 1, 0, 1]), np.full(6, 57.0))
    assert result.win_rate_at_equal_length is None and "same length difference" in result.absent_reason


PERSONAS = {f"u{i:03d}": e for i, e in zip(range(1, 9), [0.0, 0.4, -0.3, 0.8, -0.6, 0.2, 0.1, -0.2], strict=True)}


def test_compare_three_stored_runs(tmp_path):
    runs = [write_run(tmp_path / name, effect=e, persona_effects=PERSONAS, seed=i)
            for i, (name, e) in enumerate([("instruct", 0.0), ("sft", 0.2), ("orpo", 0.6)])]
    out = tmp_path / "cmp"
    result = run_cli("compare", *runs[:2], "--baseline", runs[2], "--out", out, "--metric", "psychocounsel.empathy")
    assert result.code == 0, result.output
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["unit"] == "persona" and comparison["primary"] == ["psychocounsel.overall", "psychocounsel.safety"]
    overall = comparison["metrics"]["psychocounsel.overall"]
    assert overall["family"] == "primary" and comparison["metrics"]["psychocounsel.empathy"]["family"] == "exploratory"
    assert overall["mixed_model"]["df"] == 2 and overall["friedman"]["df"] == 2 and overall["friedman"]["unit"] == "persona"
    assert set(overall["head_to_head"]) == {"instruct", "sft"} and overall["bradley_terry"]["unit"] == "persona"
    assert all(w["unit"] == "persona" for w in overall["head_to_head"].values())
    assert comparison["metrics"]["psychocounsel.empathy"]["rating_chi2"]["df"] >= 1
    assert overall["mixed_model"]["emms"]["orpo"]["mean"] > overall["mixed_model"]["emms"]["instruct"]["mean"]
    for name in ("omnibus", "contrasts", "emms", "win_rates", "bradley_terry"):
        assert (out / f"{name}.csv").exists() and (out / f"{name}.parquet").exists()
    # Holm within the primary family, by hand: two omnibus p-values.
    raw = [comparison["metrics"][m]["p_value"] for m in comparison["primary"]]
    assert overall["p_adjusted"] == pytest.approx(min(1, 2 * min(raw)) if overall["p_value"] == min(raw)
                                                  else min(1, max(2 * min(raw), max(raw))))
    assert overall["best"] == "orpo" and overall["verdict"].startswith("orpo better than each of the other 2 runs")
    assert "Primary metrics" in result.output and "Exploratory metrics" in result.output and "unit of analysis" in result.output
    assert "mixed_model" in comparison["methods"] and "families" in comparison["methods"]


def test_compare_crowns_no_winner_without_evidence(tmp_path):
    """The review's case: 4.04 vs 4.01 (p = 0.537) and exact ties were shown as a best run in green."""
    a = write_run(tmp_path / "a", effect=0.0, persona_effects=PERSONAS, seed=1)
    b = write_run(tmp_path / "b", effect=0.03, persona_effects=PERSONAS, seed=2)
    out = tmp_path / "cmp"
    result = run_cli("compare", a, b, "--out", out, "--metric", "psychocounsel.empathy")
    assert result.code == 0, result.output
    comparison = json.loads((out / "comparison.json").read_text())
    for metric in ("psychocounsel.overall", "psychocounsel.empathy"):
        r = comparison["metrics"][metric]
        assert r["best"] is None and r["verdict"].startswith("no difference shown"), r["verdict"]
    assert "no difference shown" in result.output
    html = (out / "report.html").read_text()
    assert 'class="num best"' not in html


def test_compare_output_fits_the_terminal_with_long_run_names(tmp_path):
    """The review's case: wide compares wrapped names mid-word even at 160 columns. Runs get letters and a legend (one
    run per line), text wraps at word boundaries and tables cut cells with an ellipsis, so no line outgrows the width."""
    from rich.cells import cell_len

    names = [f"act-fm-checkpoint-orpo-step-{k}000-with-a-long-name" for k in range(4)]
    runs = [write_run(tmp_path / name, effect=0.2 * k, persona_effects=PERSONAS, seed=k) for k, name in enumerate(names)]
    for width in (80, 160):
        result = run_cli("compare", *runs, "--out", tmp_path / f"c{width}", "--all", env={"COLUMNS": str(width)})
        assert result.code == 0, result.output
        lines = [line for line in result.output.splitlines() if not line.startswith(("comparison:", "report:"))]
        assert max(cell_len(line) for line in lines) <= width, max(lines, key=cell_len)
        for letter, name in zip("ABCD", names, strict=True):
            assert f"{letter} = {name}" in result.output
    brief = run_cli("compare", *runs, "--out", tmp_path / "brief", env={"COLUMNS": "100"})
    assert "Exploratory metrics" in brief.output and "every result below is exploratory" not in brief.output
    assert brief.output.count("\n") < run_cli("compare", *runs, "--out", tmp_path / "all", "--all").output.count("\n")


def test_compare_refuses_runs_that_are_not_comparable_and_warns_on_the_rest(tmp_path):
    """The review's case: 3-turn and 6-turn runs, and runs with different simulated clients, were compared silently."""
    from evalkit.content.personas import load_personas

    people = {p.id: 0.1 * (i % 3) for i, p in enumerate(load_personas()[:6])}

    def act(name, **kwargs):
        settings = {"turns": 6, "client": "client-x", **kwargs}
        return write_run(tmp_path / name, effect=0, persona_effects=people, rubric_id="act-fm", **settings)

    base = act("base")
    refused = {"judge": (act("judge", judge="judge-y"), ["different judges"]),
               "turns": (act("short", turns=3), ["session length", "6 turns", "has 3"]),
               "client": (act("client", client="client-y"), ["simulated client", "client-y"]),
               "client sampling": (act("cs", sampling={"client": {"temperature": 1.1}}), ["simulated client sampling", "temperature"]),
               "judge method": (act("method", judge_method="other"), ["judge method", "other"])}
    for name, (run, fragments) in refused.items():
        assert_one_line_error(run_cli("compare", base, run, "--out", tmp_path / f"c-{name}"), "not comparable", *fragments)
    hot = act("hot", sampling={"therapist": {"temperature": 1.2}})
    warned = run_cli("compare", base, hot, "--out", tmp_path / "c-hot", "--metric", "act-fm.stance_c1")
    assert warned.code == 0 and "therapist sampling differs" in warned.output and "temperature 0.7 vs 1.2" in warned.output
    # Gate and plan refuse the same differences.
    assert_one_line_error(run_cli("gate", "--baseline", base, "--candidate", refused["turns"][0]), "cannot decide", "session length")
    assert_one_line_error(run_cli("plan", "--metric", "act-fm.consistency_total", "--run", base, "--run", refused["client"][0]),
                          "not comparable", "simulated client")


def test_compare_reference_runs_does_not_warn_about_judges(tmp_path):
    """Reference suites have no judge: two of their runs were said to be "judged by different judges"."""
    import evalkit
    from evalkit.backends.mock import MockBackend

    evalkit.run(MockBackend(model="copycat", replies=["I hear how hard this is."]), "reference", out=tmp_path / "a", report=False)
    evalkit.run(MockBackend(model="generic", replies=["Tell me more about that."]), "reference", out=tmp_path / "b", report=False)
    result = run_cli("compare", tmp_path / "a", "--baseline", tmp_path / "b", "--out", tmp_path / "c", "--bootstrap", "50")
    assert result.code == 0, result.output
    assert "judge" not in result.output.lower()


def test_compare_reports_a_model_on_one_session_per_run_as_not_estimable(tmp_path):
    """The review's case (one risk session per run): a number was printed (3204957.55 on (3, inf) df); now the metric
    says it is not estimable and names why."""
    from evalkit.content.rubrics import load_rubric

    one = {"p1": 0.0}
    critical = {(f"p1#{r}", i.id): 0.9 for r in (0, 1) for i in load_rubric("safety").critical_items}
    runs = [write_run(tmp_path / f"r{k}", effect=0.1 * k, persona_effects=one, rubric_id="safety", seed=k, replicates=1,
                      override=critical) for k in range(4)]
    out = tmp_path / "cmp"
    result = run_cli("compare", *runs, "--out", out, "--metric", "safety.graded_mean")
    assert result.code == 0, result.output
    graded = json.loads((out / "comparison.json").read_text())["metrics"]["safety.graded_mean"]
    assert graded["mixed_model"] is None and graded["mixed_model_error"].startswith("not estimable")
    assert graded["p_value"] is None and graded["best"] is None and "not estimable" in graded["verdict"]
    assert "not estimable" in result.output and "inf" not in result.output


def test_compare_critical_failure_share_is_a_primary_metric_of_the_safety_suite(tmp_path):
    from evalkit.content.rubrics import load_rubric

    personas = {f"p{i}": 0.0 for i in range(1, 7)}
    items = [i.id for i in load_rubric("safety").critical_items]
    passing = {(f"{p}#{r}", item): 0.9 for p in personas for r in (0, 1) for item in items}
    failing = {**passing, **{(f"{p}#0", "no_harm_enabling_content"): 0.1 for p in ("p1", "p2", "p3")}}
    a = write_run(tmp_path / "a", effect=0, persona_effects=personas, rubric_id="safety", override=passing)
    b = write_run(tmp_path / "b", effect=0, persona_effects=personas, rubric_id="safety", override=failing, seed=2)
    out = tmp_path / "cmp"
    assert run_cli("compare", a, b, "--out", out).code == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["primary"] == ["safety.critical_failure", "safety.graded_mean"]
    share = comparison["metrics"]["safety.critical_failure"]
    assert share["family"] == "primary" and share["better"] == "lower" and share["means"] == {"a": 0.0, "b": 0.25}
    assert share["n"] == {"a": 12, "b": 12}


def test_compare_refuses_incompatible_runs(tmp_path):
    a = write_run(tmp_path / "a", effect=0, persona_effects=PERSONAS)
    b = write_run(tmp_path / "b", effect=0, persona_effects=PERSONAS, suite_version="2.0.0")
    assert_one_line_error(run_cli("compare", a, b, "--out", tmp_path / "c"), "not comparable", "suite", "2.0.0")


def test_compare_mismatched_sessions_needs_matched(tmp_path):
    a = write_run(tmp_path / "a", effect=0, persona_effects=PERSONAS)
    b = write_run(tmp_path / "b", effect=0.5, persona_effects=PERSONAS, skip={"u001#0", "u002#1"})
    assert_one_line_error(run_cli("compare", a, b, "--out", tmp_path / "c"), "--matched", "b lacks 2")
    result = run_cli("compare", a, b, "--matched", "--out", tmp_path / "c", "--metric", "psychocounsel.overall")
    assert result.code == 0, result.output
    overall = json.loads((tmp_path / "c" / "comparison.json").read_text())["metrics"]["psychocounsel.overall"]
    assert overall["n"] == {"a": 14, "b": 14}


def test_compare_leaves_out_sessions_with_low_persona_adherence_unless_asked(tmp_path):
    from evalkit.judging import adherence
    from evalkit.store.records import ItemScore
    from evalkit.store.rundir import RunDir

    a = write_run(tmp_path / "a", effect=0, persona_effects=PERSONAS)
    b = write_run(tmp_path / "b", effect=0.5, persona_effects=PERSONAS)
    store = RunDir(b)
    manifest = store.require_manifest()
    store.write_manifest(manifest.model_copy(update={"config": manifest.config.model_copy(update={"adherence_threshold": 0.8})}))
    store.append_scores([ItemScore(session_id=session, source_id=session[:4], rubric=adherence.ID, rubric_version=adherence.VERSION,
                                   item="t2.stays_client", turn=2, valid=True, expected=rate, judge="j")
                         for session, rate in (("u001#0", 0.3), ("u002#0", 0.95))])
    for flag, expected in (([], 15), (["--include-flagged"], 16)):
        out = tmp_path / f"c{len(flag)}"
        result = run_cli("compare", a, b, "--matched", "--out", out, "--metric", "psychocounsel.overall",
                         "--metric", "psychocounsel.empathy", *flag)
        assert result.code == 0, result.output
        comparison = json.loads((out / "comparison.json").read_text())
        assert comparison["metrics"]["psychocounsel.overall"]["n"]["b"] == expected
        assert comparison["flagged"] == {"a": 0, "b": 1} and comparison["include_flagged"] == bool(flag)
        assert sum(comparison["metrics"]["psychocounsel.empathy"]["rating_chi2"]["counts"][1]) == expected
