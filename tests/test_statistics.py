"""Every statistic is checked against a computation independent of the code under test:
closed-form ANOVA for a balanced design, rank formulas, the binomial distribution, Wilson's formula,
Hunter's MM algorithm for Bradley-Terry, and Newton-Raphson for the logistic model."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evalkit.statistics.mixed import fit_mixed_model
from evalkit.statistics.nonparametric import cohens_d, friedman, kruskal_wallis, rank_biserial, rating_counts_chi2
from evalkit.statistics.winrate import bradley_terry, head_to_head, length_controlled_win_rate, win_summary

from .conftest import assert_one_line_error, run_cli
from .synthetic_runs import write_run

CONDITIONS = ["instruct", "sft", "orpo"]


def balanced_data(personas=8, replicates=3, seed=3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    effects = {"instruct": 0.0, "sft": 0.3, "orpo": 0.9}
    persona_effect = rng.normal(0, 0.7, personas)
    rows = [{"condition": c, "persona": f"p{p}", "session": f"p{p}#{r}",
             "value": 2.0 + effects[c] + persona_effect[p] + rng.normal(0, 0.5)}
            for c in CONDITIONS for p in range(personas) for r in range(replicates)]
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


def test_mixed_model_matches_balanced_anova():
    data = balanced_data()
    fit = fit_mixed_model(data, CONDITIONS)
    cond_means, var_e, var_u, replicates = anova_components(data)
    personas = data["persona"].nunique()
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
    assert fit.df == 2
    assert fit.wald_chi2 == pytest.approx(wald, rel=1e-6)
    assert fit.p_value == pytest.approx(stats.chi2.sf(wald, 2), rel=1e-6)
    se_diff = math.sqrt(2 * var_e / m)
    for row in fit.contrasts:
        assert row["estimate"] == pytest.approx(cond_means[row["a"]] - cond_means[row["b"]], abs=1e-6)
        assert row["se"] == pytest.approx(se_diff, rel=1e-6)
    # Holm-Sidak by hand.
    raw = [row["p"] for row in fit.contrasts]
    order = np.argsort(raw)
    adjusted, running = np.empty(3), 0.0
    for rank, idx in enumerate(order):
        running = max(running, 1 - (1 - raw[idx]) ** (3 - rank))
        adjusted[idx] = min(running, 1.0)
    assert [row["p_holm_sidak"] for row in fit.contrasts] == pytest.approx(adjusted, abs=1e-9)
    # Nakagawa & Schielzeth R-squared with the fixed-effect variance of the condition means.
    var_f = np.var(data["condition"].map(cond_means).to_numpy())
    total = var_f + var_u + var_e
    assert fit.r2_marginal == pytest.approx(var_f / total, rel=1e-6)
    assert fit.r2_conditional == pytest.approx((var_f + var_u) / total, rel=1e-6)


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
    ours = bradley_terry(outcomes, models)
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
    assert [ours[m] for m in models] == pytest.approx(np.log(pi).tolist(), abs=1e-6)


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
    for name in ("omnibus", "contrasts", "emms", "win_rates"):
        assert (out / f"{name}.csv").exists()
    assert "Wald" in result.output


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


def test_compare_can_exclude_sessions_with_low_persona_adherence(tmp_path):
    from evalkit.records import SessionAdherence
    from evalkit.store import RunStore

    a = write_run(tmp_path / "a", effect=0, persona_effects=PERSONAS)
    b = write_run(tmp_path / "b", effect=0.5, persona_effects=PERSONAS)
    store = RunStore(b)
    for session, rate in (("u001#0", 0.3), ("u002#0", 0.95)):
        store.append_adherence(SessionAdherence(session_id=session, source_id=session[:4], checks=[], rate=rate,
                                                flagged=rate < 0.8, judge="j"))
    for flag, expected in ((["--exclude-flagged"], 15), ([], 16)):
        out = tmp_path / f"c{len(flag)}"
        result = run_cli("compare", a, b, "--matched", "--out", out, "--metric", "psychocounsel.overall",
                         "--metric", "psychocounsel.empathy", *flag)
        assert result.code == 0, result.output
        comparison = json.loads((out / "comparison.json").read_text())
        assert comparison["metrics"]["psychocounsel.overall"]["n"]["b"] == expected
        assert sum(comparison["metrics"]["psychocounsel.empathy"]["rating_chi2"]["counts"][1]) == expected
