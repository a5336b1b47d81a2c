"""Every statistic is checked against a computation independent of the code under test:
closed-form ANOVA for balanced designs (with and without replicates), lme4's reference fits that statsmodels
ships (logLik, variance components, fixed effects, vcov; Pastes), rank formulas, the binomial distribution,
Wilson's formula, Hunter's MM algorithm and a direct Nelder-Mead optimisation for Bradley-Terry, scipy's
one-sample t for the gate, and Newton-Raphson for the logistic model. Error rates: test_statistics_simulation.py."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels
from scipy import optimize, stats
from statsmodels.regression.mixed_linear_model import MixedLM

from evalkit.statistics.mixed import build_model, design, fit_mixed_model, lme4_covariance
from evalkit.statistics.noninferiority import decide, persona_of, plan, plan_from_differences, sessions_needed
from evalkit.statistics.nonparametric import cohens_d, friedman, kruskal_wallis, rank_biserial, rating_counts_chi2
from evalkit.statistics.reml import ProfiledReml, reml_fit
from evalkit.statistics.winrate import (
    bradley_terry,
    bradley_terry_bootstrap,
    head_to_head,
    length_controlled_win_rate,
    pairwise_outcomes,
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


def test_rating_count_chi_square_by_hand():
    ratings = pd.DataFrame({"condition": ["a"] * 10 + ["b"] * 10,
                            "rating": [1, 1, 2, 2, 2, 3, 3, 3, 3, 3] + [1, 1, 1, 1, 2, 2, 2, 3, 3, 1]})
    observed = np.array([[2, 3, 5], [5, 3, 2]])
    expected = observed.sum(1, keepdims=True) * observed.sum(0, keepdims=True) / observed.sum()
    chi2 = ((observed - expected) ** 2 / expected).sum()
    result = rating_counts_chi2(ratings, ["a", "b"])
    assert result["counts"] == observed.tolist() and result["df"] == 2
    assert result["chi2"] == pytest.approx(chi2, rel=1e-12)


def test_effect_sizes_by_definition():
    a, b = np.array([3.1, 2.4, 4.0, 3.3, 2.9]), np.array([2.2, 2.9, 1.8, 2.5])
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    assert cohens_d(a, b) == pytest.approx((a.mean() - b.mean()) / pooled, rel=1e-12)
    greater = sum(x > y for x, y in itertools.product(a, b))
    less = sum(x < y for x, y in itertools.product(a, b))
    assert rank_biserial(a, b) == pytest.approx((greater - less) / (len(a) * len(b)), rel=1e-12)


def test_head_to_head_sign_test_and_wilson_by_hand():
    candidate = pd.Series({"s1": 3.0, "s2": 2.5, "s3": 4.0, "s4": 1.0, "s5": 3.3, "s6": 2.0, "s7": 5.0})
    baseline = pd.Series({"s1": 2.0, "s2": 2.5, "s3": 3.0, "s4": 2.0, "s5": 3.0, "s6": 1.0, "s7": 4.0, "s8": 1.0})
    result = head_to_head(candidate, baseline, "higher")
    assert (result["wins"], result["losses"], result["ties"], result["matched"]) == (5, 1, 1, 7)
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


def test_bradley_terry_matches_hunters_mm_algorithm():
    rng = np.random.default_rng(5)
    models = ["a", "b", "c", "d"]
    true = {"a": 0.0, "b": 0.5, "c": 1.0, "d": -0.4}
    rows = []
    for session in range(60):
        for x, y in itertools.combinations(models, 2):
            p = 1 / (1 + math.exp(-(true[x] - true[y])))
            winner, loser = (x, y) if rng.random() < p else (y, x)
            rows.append({"session": f"s{session}", "winner": winner, "loser": loser})
    outcomes = pd.DataFrame(rows)
    ours = bradley_terry(outcomes, models, prior_sd=None)  # the plain MLE: Hunter's fixed point
    assert ours.converged and not ours.separated and ours.prior_sd is None
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
    assert [ours.strengths[m].strength for m in models] == pytest.approx(np.log(pi).tolist(), abs=1e-6)


def penalised_strengths_by_hand(outcomes: pd.DataFrame, models: list[str], prior_sd: float) -> np.ndarray:
    """The same penalised likelihood written row by row, minimised by Nelder-Mead (no gradient), relative to model 0."""
    pairs = [(models.index(w_), models.index(l_)) for w_, l_ in zip(outcomes["winner"], outcomes["loser"], strict=True)]

    def objective(s):
        loglik = sum(-math.log1p(math.exp(-(s[i] - s[j]))) for i, j in pairs)
        return -loglik + sum(v * v for v in s) / (2 * prior_sd**2)

    best = optimize.minimize(objective, np.zeros(len(models)), method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 40000, "maxfev": 40000})
    return best.x - best.x[0]


def one_loss_outcomes(sessions: int = 29, seed: int = 4) -> pd.DataFrame:
    """Model 'top' meets a, b and c in every session (87 comparisons) and loses once; the rest are mixed."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(sessions):
        for other in ("a", "b", "c"):
            lost = s == 7 and other == "b"
            rows.append({"session": f"p{s}#0", "winner": other if lost else "top", "loser": "top" if lost else other})
        for x, y in (("a", "b"), ("a", "c"), ("b", "c")):
            winner, loser = (x, y) if rng.random() < 0.5 else (y, x)
            rows.append({"session": f"p{s}#0", "winner": winner, "loser": loser})
    return pd.DataFrame(rows)


def test_bradley_terry_penalised_estimate_matches_direct_optimisation():
    models = ["a", "b", "c", "top"]
    outcomes = one_loss_outcomes()
    ours = bradley_terry(outcomes, models, prior_sd=2.0)
    assert ours.converged and ours.strengths["top"].losses == 1 and ours.strengths["top"].wins == 86
    assert [ours.strengths[m].strength for m in models] == pytest.approx(
        penalised_strengths_by_hand(outcomes, models, 2.0).tolist(), abs=1e-5)
    # Under complete separation (the one loss removed) the penalised estimate is still finite and still the optimum.
    separated = outcomes[~((outcomes["winner"] == "b") & (outcomes["loser"] == "top"))]
    fit = bradley_terry(separated, models, prior_sd=2.0)
    assert fit.separated and fit.separated_models == ["top"] and fit.converged
    assert math.isfinite(fit.strengths["top"].strength)
    assert [fit.strengths[m].strength for m in models] == pytest.approx(
        penalised_strengths_by_hand(separated, models, 2.0).tolist(), abs=1e-5)
    # The plain MLE does not exist there: reported as not converged rather than as an estimate.
    assert not bradley_terry(separated, models, prior_sd=None).converged


def test_bradley_terry_bootstrap_counts_separation_and_stays_finite():
    models = ["a", "b", "c", "top"]
    outcomes = one_loss_outcomes()
    result = bradley_terry_bootstrap(outcomes, models, rounds=1000, seed=1)
    boot = result.bootstrap
    assert boot.rounds == boot.usable == 1000
    # A resample leaves out the one session holding the loss with probability (1 - 1/29)^29 = 0.36.
    expected = (1 - 1 / 29) ** 29
    top = result.strengths["top"]
    assert top.never_lost_resamples == boot.separated_resamples
    assert abs(boot.separated_resamples / 1000 - expected) < 4 * math.sqrt(expected * (1 - expected) / 1000)
    assert all(math.isfinite(v) for s in result.strengths.values() for v in (s.strength, s.ci_low, s.ci_high))
    assert top.ci_low < top.strength < top.ci_high
    assert "N(0, 2^2)" in result.method and result.prior_sd == 2.0


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


def test_plan_gives_both_figures():
    result = plan(0.5, 0.25, alpha=0.05, power=0.8)
    assert result.n_pass == sessions_needed(0.5, 0.25, 0.05, 0.8) and result.unit == "sessions"
    assert result.drop == 0.25 and result.n_detect is not None and result.power_detect_at_n_detect >= 0.8
    bigger = plan(0.5, 0.25, drop=0.5)
    assert bigger.n_detect < result.n_detect
    # At a drop of exactly one margin the chance of 'regression' tends to 1 - alpha, so power 0.97 is out of reach.
    out_of_reach = plan(0.5, 0.25, power=0.97)
    assert out_of_reach.n_detect is None and "1 - alpha" in out_of_reach.note
    rng = np.random.default_rng(3)
    keys = [f"u{p}#{r}" for p in range(8) for r in range(2)]
    d = rng.normal(0, 0.3, 16)
    clustered = plan_from_differences(d, 0.25, personas=[persona_of(k) for k in keys])
    means = pd.Series(d).groupby([persona_of(k) for k in keys]).mean()
    assert clustered.unit == "personas" and clustered.replicates == 2 and clustered.sd == pytest.approx(means.std(ddof=1))
    assert clustered.sessions_pass == 2 * clustered.n_pass


def test_bradley_terry_bootstrap_is_fast():
    import time

    rng = np.random.default_rng(0)
    conditions = ["m0", "m1", "m2", "m3"]
    persona = rng.normal(0, 0.5, 12)
    table = pd.DataFrame([{"condition": c, "session": f"p{p}#{r}", "persona": f"p{p}", "value": 0.2 * j + persona[p] + rng.normal(0, 0.5)}
                          for j, c in enumerate(conditions) for p in range(12) for r in range(2)])
    outcomes = pairwise_outcomes(table, conditions, "higher")
    started = time.perf_counter()
    result = bradley_terry_bootstrap(outcomes, conditions, rounds=1000, seed=0)
    assert time.perf_counter() - started < 3.0  # ~0.1 s on one core; the per-resample GLM refits took ~2 s
    assert result.bootstrap.usable == 1000


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
    result = run_cli("compare", *runs[:2], "--baseline", runs[2], "--out", out, "--bootstrap", "50",
                     "--metric", "psychocounsel.overall", "--metric", "psychocounsel.empathy")
    assert result.code == 0, result.output
    comparison = json.loads((out / "comparison.json").read_text())
    overall = comparison["metrics"]["psychocounsel.overall"]
    assert overall["mixed_model"]["df"] == 2 and overall["friedman"]["df"] == 2
    assert set(overall["head_to_head"]) == {"instruct", "sft"} and "bradley_terry" in overall
    assert comparison["metrics"]["psychocounsel.empathy"]["rating_chi2"]["df"] >= 1
    assert overall["mixed_model"]["emms"]["orpo"]["mean"] > overall["mixed_model"]["emms"]["instruct"]["mean"]
    for name in ("omnibus", "contrasts", "emms", "win_rates", "bradley_terry"):
        assert (out / f"{name}.csv").exists() and (out / f"{name}.parquet").exists()
    assert "F (df)" in result.output and overall["best"] == "orpo" and "mixed_model" in comparison["methods"]


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
