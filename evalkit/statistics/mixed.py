"""Linear mixed model for scores across conditions, fitted by REML (statsmodels MixedLM).

    value ~ condition + (1 | persona) + (1 | persona:condition)     when some persona x condition cell
                                                                    holds two or more sessions (replicates)
    value ~ condition + (1 | persona)                               otherwise (one session per cell: the
                                                                    persona x condition term cannot be told
                                                                    from the residual, which then absorbs it)

From one fit: the omnibus test that all conditions are equal (Wald statistic on k-1 df, referred to
F(k-1, containment df), the chi-square p beside it), estimated marginal means with t CIs, all pairwise
contrasts with Holm-Sidak adjustment, ICCs and Nakagawa & Schielzeth's R-squared.

Fixed-effect covariance: by default lme4's (X'V^-1X)^-1 with V built from the REML variance
components, which for a balanced design reproduces the classical ANOVA standard errors exactly;
statsmodels' inverse full Hessian is available as covariance="statsmodels".

Why the persona x condition term and the F reference: docs/statistics.md (simulation: without the
term the omnibus test rejected ~35% of null datasets with replicates; with it and chi-square ~8%; with
it and F on containment df ~5%).
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec
from statsmodels.stats.multitest import multipletests

from evalkit.statistics.reml import reml_fit
from evalkit.statistics.results import Contrast, Emm, MixedModelResult

MIN_PERSONAS = 3  # personas in the fit
MIN_DDF = 2  # containment df of the condition term


class NotEstimable(ValueError):
    """The data cannot estimate the model's condition effects (too few personas or observations): report that, never a
    number. The message says what is missing."""


def design(data: pd.DataFrame, conditions: list[str]) -> np.ndarray:
    """Intercept plus treatment dummies, the first condition the reference."""
    codes = pd.Categorical(data["condition"], categories=conditions).codes
    x = np.zeros((len(data), len(conditions)))
    x[:, 0] = 1.0
    for j in range(1, len(conditions)):
        x[:, j] = codes == j
    return x


def build_model(y: np.ndarray, x: np.ndarray, personas: np.ndarray, codes: np.ndarray, k: int,
                 interaction: bool) -> MixedLM:
    if not interaction:
        return MixedLM(y, x, groups=personas)
    labels = sorted(set(personas))  # MixedLM orders groups this way
    mats = [np.eye(k)[codes[personas == g]] for g in labels]
    spec = VCSpec(["persona:condition"], [[[f"c{j}" for j in range(k)] for _ in labels]], [mats])
    return MixedLM(y, x, groups=personas, exog_re=np.ones((len(y), 1)), exog_vc=spec)


def lme4_covariance(result) -> np.ndarray:
    """(X'V^-1X)^-1 with V = Z G Z' + sum_j vcomp_j M_j M_j' + scale I per group, at the fitted variance
    components: the fixed-effect covariance lme4's vcov() reports (sigma^2 (R_X'R_X)^-1).

    Works for any statsmodels MixedLM result (random coefficients and variance components)."""
    model = result.model
    k = model.k_fe
    info = np.zeros((k, k))
    cov_re = np.atleast_2d(np.asarray(result.cov_re, float)) if model.k_re else None
    vcomp = np.asarray(result.vcomp, float)
    for gi in range(len(model.group_labels)):
        x = model.exog_li[gi]
        v = result.scale * np.eye(len(x))
        if model.k_re:
            z = model.exog_re_li[gi]
            v += z @ cov_re @ z.T
        for j in range(model.k_vc):
            m = model.exog_vc.mats[j][gi]
            v += vcomp[j] * (m @ m.T)
        info += x.T @ np.linalg.solve(v, x)
    return np.linalg.inv(info)


def containment_df(personas: np.ndarray, codes: np.ndarray, k: int, interaction: bool) -> tuple[float, float]:
    """Denominator df for terms varying within persona (condition), and for persona-level quantities (EMMs).

    Condition: the residual df of the level that contains it. With (1|persona:condition) that is the
    persona x condition cells: cells - rank([intercept, condition, persona]) at cell level ((P-1)(k-1) when
    complete); without it, observations - rank of the same design at observation level (between-within df).
    EMMs contain the persona intercept: personas - 1.
    """
    units = np.unique(np.column_stack([pd.factorize(personas)[0], codes]), axis=0) if interaction else \
        np.column_stack([pd.factorize(personas)[0], codes])
    persona_codes = units[:, 0]
    cond = np.eye(k)[units[:, 1]][:, 1:]
    pers = np.eye(persona_codes.max() + 1)[persona_codes]
    rank = np.linalg.matrix_rank(np.hstack([np.ones((len(units), 1)), cond, pers]))
    return float(len(units) - rank), float(len(np.unique(persona_codes)) - 1)


def fit_mixed_model(data: pd.DataFrame, conditions: list[str], level: float = 0.95,
                    covariance: Literal["lme4", "statsmodels"] = "lme4") -> MixedModelResult:
    """`data`: one row per session x condition with columns condition, persona, value (rows with a missing value
    are dropped). Raises NotEstimable (a ValueError) when the data cannot estimate the condition effects: fewer than
    three personas, a condition scored on fewer than two personas, fewer than two containment df for the condition
    term (too few persona x condition cells), or no variance left to test against."""
    data = data.dropna(subset=["value"])
    data = data[data["condition"].isin(conditions)]
    k = len(conditions)
    if k < 2:
        raise NotEstimable("the mixed model needs two or more conditions")
    per_condition = data.groupby("condition")["persona"].nunique().reindex(conditions, fill_value=0)
    if (thin := per_condition[per_condition < 2]).size:
        raise NotEstimable(f"not estimable: {', '.join(f'{c} has {n} persona(s)' for c, n in thin.items())} with a valid "
                           "score; every condition needs two or more")
    if data["persona"].nunique() < MIN_PERSONAS:
        raise NotEstimable(f"not estimable: {data['persona'].nunique()} personas; the mixed model needs {MIN_PERSONAS} or more")
    y = data["value"].to_numpy(float)
    x = design(data, conditions)
    codes = pd.Categorical(data["condition"], categories=conditions).codes.astype(int)
    personas = data["persona"].astype(str).to_numpy()
    cell_sizes = pd.Series(list(zip(personas, codes, strict=True))).value_counts()
    interaction = bool((cell_sizes > 1).any())
    ddf, ddf_emm = containment_df(personas, codes, k, interaction)
    if ddf < MIN_DDF:
        raise NotEstimable(f"not estimable: {ddf:g} containment df for the condition effect ({len(cell_sizes)} persona x "
                           f"condition cells over {data['persona'].nunique()} personas); {MIN_DDF} or more are needed, i.e. "
                           "more personas scored in more than one condition")
    model = build_model(y, x, personas, codes, k, interaction)
    result, optimizer, tried, notes, converged = reml_fit(model)

    beta = np.asarray(result.fe_params, float)
    cov = lme4_covariance(result) if covariance == "lme4" else np.asarray(result.cov_params())[:k, :k]
    contrast = np.hstack([np.zeros((k - 1, 1)), np.eye(k - 1)])
    diff = contrast @ beta
    within = contrast @ cov @ contrast.T
    if not (np.all(np.isfinite(within)) and np.all(np.linalg.eigvalsh(within) > 1e-12 * max(float(np.var(y)), 1e-300))):
        raise NotEstimable("not estimable: no variance is left within personas to test the conditions against "
                           "(the scores fit the conditions exactly)")
    wald = float(diff @ np.linalg.solve(within, diff))
    f_stat = wald / (k - 1)

    vectors = {c: np.eye(k)[0] + (np.eye(k)[i] if i else 0) for i, c in enumerate(conditions)}
    q_emm = stats.t.ppf(0.5 + level / 2, ddf_emm)
    emms = {}
    for c, a in vectors.items():
        mean, se = float(a @ beta), float(np.sqrt(a @ cov @ a))
        emms[c] = Emm(condition=c, mean=mean, se=se, df=ddf_emm, ci_low=mean - q_emm * se, ci_high=mean + q_emm * se)

    q = stats.t.ppf(0.5 + level / 2, ddf)
    rows = []
    for a, b in itertools.combinations(conditions, 2):
        vec = vectors[a] - vectors[b]
        estimate, se = float(vec @ beta), float(np.sqrt(vec @ cov @ vec))
        t = estimate / se
        rows.append(dict(a=a, b=b, estimate=estimate, se=se, df=ddf, t=t, p=float(2 * stats.t.sf(abs(t), ddf)),
                         ci_low=estimate - q * se, ci_high=estimate + q * se))
    with np.errstate(divide="ignore"):  # p = 1 takes log(0) inside statsmodels; its adjusted value is still 1
        adjusted = multipletests([r["p"] for r in rows], method="holm-sidak")[1]
    contrasts = [Contrast(**r, p_holm_sidak=float(p)) for r, p in zip(rows, adjusted, strict=True)]

    var_persona = float(np.asarray(result.cov_re)[0, 0])
    var_pc = float(np.asarray(result.vcomp)[0]) if interaction else None
    var_residual = float(result.scale)
    var_fixed = float(np.var(x @ beta))
    random = var_persona + (var_pc or 0.0) + var_residual
    total = var_fixed + random
    if var_persona < 1e-8 * max(random, 1e-300):
        notes.append("persona variance estimated at the boundary (0)")
    if interaction and var_pc < 1e-8 * max(random, 1e-300):
        notes.append("persona:condition variance estimated at the boundary (0)")

    terms = "(1|persona) + (1|persona:condition)" if interaction else "(1|persona)"
    cov_text = "lme4-equivalent (X'V^-1X)^-1" if covariance == "lme4" else "statsmodels inverse full Hessian"
    method = (f"REML mixed model (statsmodels MixedLM): value ~ condition + {terms}; Wald test of condition on "
              f"{k - 1} df referred to F({k - 1}, {ddf:g}) (containment df), chi-square p also given; {cov_text}; "
              f"EMM CIs t({ddf_emm:g}); contrasts t({ddf:g}), Holm-Sidak adjusted")
    if not interaction:
        method += "; no replicates: persona:condition variance is not identifiable and is absorbed by the residual"
    return MixedModelResult(
        method=method, formula=f"value ~ condition + {terms}", conditions=conditions, n=len(data),
        groups=int(data["persona"].nunique()), cells=int(len(cell_sizes)), persona_condition_term=interaction,
        wald_chi2=wald, df=k - 1, p_value_chi2=float(stats.chi2.sf(wald, k - 1)), f_statistic=f_stat,
        df_denominator=ddf, p_value=float(stats.f.sf(f_stat, k - 1, ddf)),
        covariance=covariance, level=level, emms=emms, contrasts=contrasts,
        icc=var_persona / random if random > 0 else float("nan"),
        icc_persona_condition=(var_persona + var_pc) / random if interaction and random > 0 else None,
        r2_marginal=var_fixed / total if total > 0 else float("nan"),
        r2_conditional=(var_fixed + var_persona + (var_pc or 0.0)) / total if total > 0 else float("nan"),
        var_fixed=var_fixed, var_persona=var_persona, var_persona_condition=var_pc, var_residual=var_residual,
        reml_loglik=float(result.llf), converged=converged, optimizer=optimizer, optimizers_tried=tried,
        warnings=sorted(set(notes)),
    )
