"""Linear mixed model: score ~ condition + (1 | persona), fitted by REML (statsmodels MixedLM).

From one fit: the omnibus Wald chi-square for condition on k-1 df, estimated marginal means with
95% CIs, all pairwise contrasts with Holm-Sidak adjustment, the persona ICC, and Nakagawa &
Schielzeth's marginal and conditional R-squared.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.regression.mixed_linear_model import MixedLM
from statsmodels.stats.multitest import multipletests


@dataclass
class MixedModelResult:
    conditions: list[str]
    n: int
    groups: int
    wald_chi2: float
    df: int
    p_value: float
    emms: dict[str, dict[str, float]]
    contrasts: list[dict]
    icc: float
    r2_marginal: float
    r2_conditional: float
    var_persona: float
    var_residual: float
    converged: bool
    warnings: list[str] = field(default_factory=list)


def design(data: pd.DataFrame, conditions: list[str]) -> np.ndarray:
    """Intercept plus treatment dummies, the first condition the reference."""
    codes = pd.Categorical(data["condition"], categories=conditions).codes
    x = np.zeros((len(data), len(conditions)))
    x[:, 0] = 1.0
    for j in range(1, len(conditions)):
        x[:, j] = codes == j
    return x


def fit_mixed_model(data: pd.DataFrame, conditions: list[str], level: float = 0.95) -> MixedModelResult:
    """`data`: one row per session with columns condition, persona, value (no missing values)."""
    x = design(data, conditions)
    k = len(conditions)
    model = MixedLM(data["value"].to_numpy(float), x, groups=data["persona"].to_numpy())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # A tight BFGS gradient tolerance takes the REML optimum to machine precision (the default stops
        # about 1e-6 short); statsmodels' default optimiser chain is the fallback.
        result = model.fit(reml=True, method=["bfgs"], gtol=1e-12)
        if not result.converged:
            result = model.fit(reml=True)
    notes = sorted({str(w.message).splitlines()[0] for w in caught})
    beta = np.asarray(result.fe_params)
    cov = np.asarray(result.cov_params())[:k, :k]

    contrast = np.hstack([np.zeros((k - 1, 1)), np.eye(k - 1)])
    diff = contrast @ beta
    wald = float(diff @ np.linalg.solve(contrast @ cov @ contrast.T, diff))

    z = stats.norm.ppf(0.5 + level / 2)
    vectors = {c: np.eye(k)[0] + (np.eye(k)[i] if i else 0) for i, c in enumerate(conditions)}
    emms = {}
    for c, a in vectors.items():
        mean, se = float(a @ beta), float(np.sqrt(a @ cov @ a))
        emms[c] = {"mean": mean, "se": se, "ci_low": mean - z * se, "ci_high": mean + z * se}

    pairs = list(itertools.combinations(conditions, 2))
    raw = []
    contrasts = []
    for a, b in pairs:
        vec = vectors[a] - vectors[b]
        estimate, se = float(vec @ beta), float(np.sqrt(vec @ cov @ vec))
        zval = estimate / se
        p = float(2 * stats.norm.sf(abs(zval)))
        raw.append(p)
        contrasts.append({"a": a, "b": b, "estimate": estimate, "se": se, "z": zval, "p": p,
                          "ci_low": estimate - z * se, "ci_high": estimate + z * se})
    if raw:
        adjusted = multipletests(raw, method="holm-sidak")[1]
        for row, p_adj in zip(contrasts, adjusted, strict=True):
            row["p_holm_sidak"] = float(p_adj)

    var_persona = float(np.asarray(result.cov_re)[0, 0])
    var_residual = float(result.scale)
    var_fixed = float(np.var(x @ beta))
    total = var_fixed + var_persona + var_residual
    return MixedModelResult(
        conditions=conditions, n=len(data), groups=int(data["persona"].nunique()),
        wald_chi2=wald, df=k - 1, p_value=float(stats.chi2.sf(wald, k - 1)), emms=emms, contrasts=contrasts,
        icc=var_persona / (var_persona + var_residual) if var_persona + var_residual > 0 else float("nan"),
        r2_marginal=var_fixed / total, r2_conditional=(var_fixed + var_persona) / total,
        var_persona=var_persona, var_residual=var_residual, converged=bool(result.converged), warnings=notes,
    )
