"""A proportion over sessions clustered by persona: the critical-failure share.

Wilson's interval treats sessions as independent; with replicates of each persona, a persona's sessions share how
the model handles that persona, and the plain interval is too narrow. Here the Wilson interval is computed on the
effective sample size (Kish's design effect, as Korn & Graubard 1998 do for Clopper-Pearson on survey data):

    n_eff = p(1 - p) / v,   v = cluster-robust (CR1) variance of the share, clustered by persona (statsmodels OLS)

capped at n (a design effect below 1 is taken as 1) and scaled by (z / t(G-1))^2 for the G clusters (Korn &
Graubard's degrees-of-freedom adjustment), then statsmodels' Wilson interval at p with n_eff trials. With no
failure (or only failures) the design effect cannot be estimated; the interval then takes every persona's sessions
as perfectly correlated (n_eff = G, the number of personas), the conservative end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

METHOD = ("Wilson interval on the effective sample size n(1 - p)p / (n v): v the cluster-robust (CR1) variance of the "
          "share clustered by persona, design effect at least 1, df-adjusted by (z / t(G-1))^2 (Korn & Graubard 1998); "
          "with no failure or only failures, n_eff = number of personas")


def clustered_proportion_ci(outcomes: Sequence[float], clusters: Sequence[str], level: float = 0.95
                            ) -> tuple[float | None, float | None, float | None, float | None]:
    """(share, ci_low, ci_high, effective n) of 0/1 `outcomes` clustered by `clusters`; Nones when there are none."""
    import statsmodels.api as sm
    from statsmodels.stats.proportion import proportion_confint

    y = np.asarray(outcomes, float)
    n = len(y)
    if n == 0:
        return None, None, None, None
    share = float(y.mean())
    labels = np.asarray([str(c) for c in clusters])
    groups = len(set(labels))
    if groups < 2:
        low, high = proportion_confint(y.sum(), n, alpha=1 - level, method="wilson")
        return share, float(low), float(high), float(n)
    if 0 < share < 1:
        codes = np.unique(labels, return_inverse=True)[1]
        fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster", cov_kwds={"groups": codes})
        variance = float(fit.bse[0]) ** 2
        n_eff = min(float(n), share * (1 - share) / variance) if variance > 0 else float(n)
    else:
        n_eff = float(groups)
    z, t = stats.norm.ppf(0.5 + level / 2), stats.t.ppf(0.5 + level / 2, groups - 1)
    n_eff *= (z / t) ** 2
    low, high = proportion_confint(share * n_eff, n_eff, alpha=1 - level, method="wilson")
    return share, float(max(low, 0.0)), float(min(high, 1.0)), n_eff
