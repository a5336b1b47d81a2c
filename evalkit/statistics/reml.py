"""Reaching the REML optimum of a statsmodels MixedLM, and checking that it was reached.

statsmodels' default BFGS often stops short of the REML optimum on these models (by up to 3 log-likelihood
units on 7 of 8 metrics of one synthetic comparison), and each of its likelihood evaluations loops over groups
in Python (~1 ms). So the optimum is located first on the profiled REML deviance written in lme4's form
(Bates et al. 2015, J Stat Softw 67(1), eqs. 34-42), where one evaluation is a Cholesky of small per-persona
blocks on cross-products computed once; statsmodels then fits from that point, so the reported fit, its
log-likelihood and covariance are statsmodels' own. The optimum is checked by the REML score (gradient) at the fit; when that check fails, BFGS
polishes from that point, and if it still fails, statsmodels' optimisers run from several start values and the
best is kept.

The deviance's parameters are statsmodels' packed square-root parameters, which are lme4's theta: the lower
triangle of the Cholesky factor of cov_re / scale, then sqrt(vcomp / scale).
"""

from __future__ import annotations

import contextlib
import itertools
import warnings

import numpy as np
from scipy import linalg, optimize
from statsmodels.regression.mixed_linear_model import MixedLM
from threadpoolctl import ThreadpoolController

_GRADIENT_TOL = 1e-4  # largest |d REML / d parameter| accepted as an optimum (parameters on the sqrt scale)
_GRID = (0.0, 0.03, 0.3, 3.0, 30.0)  # variance ratios (component / residual) searched before refining
_BOUNDARY = 1e-4  # statsmodels cannot evaluate a variance of exactly 0: a component at 0 is handed over at this square root

# statsmodels' optimisers, tried only when the profiled optimum fails the gradient check:
# (name, statsmodels method, start values); the best is then polished by BFGS.
_FALLBACK = [("bfgs", "bfgs", "default"), ("bfgs/small-start", "bfgs", "small"), ("lbfgs/large-start", "lbfgs", "large"),
             ("nelder-mead", "nm", "default"), ("powell/large-start", "powell", "large")]


class ProfiledReml:
    """-2 x REML log-likelihood of a MixedLM as a function of theta, with beta and the scale profiled out.

    With Lambda(theta) the relative covariance factor, A = Lambda'Z'Z Lambda + I and V = I + Z Lambda Lambda' Z':
        deviance = log|A| + log|X'V^-1X| + (n-p) [log r'V^-1r + log(2 pi) - log(n-p) + 1]
    (the same constants as lme4's logLik(REML = TRUE) and statsmodels' REML llf). Random effects of different
    groups never share a row, so A is block-diagonal, one block per group: the blocks are held as one stacked
    array (narrower groups padded with zero columns, which add identity to A and nothing to the deviance), and an
    evaluation costs groups x (block width)^3, linear in the number of personas.
    """

    def __init__(self, model: MixedLM):
        groups = range(len(model.group_labels))
        x = np.vstack([model.exog_li[g] for g in groups])
        y = np.concatenate([model.endog_li[g] for g in groups])
        # The deviance does not change when y moves by any X b; taking the OLS residual keeps r'V^-1r from being a
        # small difference of large numbers (scores near 60 lost ~4 digits there, enough to stall the search).
        y = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
        rows = np.cumsum([0] + [len(model.endog_li[g]) for g in groups])
        self.k_re, self.k_vc = model.k_re, model.k_vc
        # Per group: Z's columns (its random effects, then each variance component's) and what scales each column:
        # -1 the k_re x k_re factor, j >= 0 component j, -2 padding.
        zs, kinds = [], []
        for g in groups:
            parts = [np.asarray(model.exog_re_li[g], float)]
            kind = [-1] * self.k_re
            for j in range(self.k_vc):
                mat = np.asarray(model.exog_vc.mats[j][g], float)
                parts.append(mat)
                kind += [j] * mat.shape[1]
            zs.append(np.hstack(parts))
            kinds.append(kind)
        width = max(z.shape[1] for z in zs)
        self.n, self.p, self.groups, self.width = len(y), x.shape[1], len(zs), width
        self.ztz = np.zeros((self.groups, width, width))
        self.ztxy = np.zeros((self.groups, width, self.p + 1))  # Z'[X y] per group
        self.kind = np.full((self.groups, width), -2)
        for g, z in enumerate(zs):
            w, own = z.shape[1], slice(rows[g], rows[g + 1])
            self.ztz[g, :w, :w] = z.T @ z
            self.ztxy[g, :w] = z.T @ np.column_stack([x[own], y[own]])
            self.kind[g, :w] = kinds[g]
        xy = np.column_stack([x, y])
        self.xy_xy = xy.T @ xy
        self.lower = np.tril_indices(self.k_re)
        self.n_theta = len(self.lower[0]) + self.k_vc

    def factor(self, theta: np.ndarray) -> np.ndarray:
        """Lambda(theta) as stacked per-group blocks: the k_re x k_re factor, then one scale per component's column."""
        theta = np.asarray(theta, float)
        component = self.kind >= 0
        scales = np.zeros(self.kind.shape)
        scales[component] = theta[len(self.lower[0]) + self.kind[component]]
        lam = np.zeros((self.groups, self.width, self.width))
        lam[:, np.arange(self.width), np.arange(self.width)] = scales
        if self.k_re:
            t = np.zeros((self.k_re, self.k_re))
            t[self.lower] = theta[:len(self.lower[0])]
            lam[:, :self.k_re, :self.k_re] = t
        return lam

    def deviance(self, theta: np.ndarray) -> float:
        lam = self.factor(theta)
        lam_t = lam.transpose(0, 2, 1)
        a = lam_t @ self.ztz @ lam + np.eye(self.width)
        b = lam_t @ self.ztxy  # Lambda'Z'[X y] per group
        try:
            chol = np.linalg.cholesky(a)
            # [X y]'V^-1[X y] = [X y]'[X y] - sum over groups of b' A^-1 b (Woodbury)
            cross = self.xy_xy - np.einsum("gmi,gmj->ij", b, np.linalg.solve(a, b))
            p = self.p
            chol_x = np.linalg.cholesky(cross[:p, :p])
        except np.linalg.LinAlgError:
            return np.inf
        beta = linalg.cho_solve((chol_x, True), cross[:p, p])
        quadratic = cross[p, p] - cross[:p, p] @ beta
        if not quadratic > 0:
            return np.inf
        d = self.n - self.p
        return float(2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum() + 2 * np.log(np.diag(chol_x)).sum()
                     + d * (np.log(quadratic) + np.log(2 * np.pi) - np.log(d) + 1))

    def optimum(self) -> np.ndarray:
        """theta minimising the deviance: the best point of a coarse grid, refined by L-BFGS-B.

        The search runs over variance ratios (theta squared) for the diagonal entries: on the square-root scale the
        deviance is flat at 0 (it depends on theta^2), so a search that reaches 0 stays there even when the optimum
        is inside; on the ratio scale the slope at 0 says which way to go. The grid (ratios 0 to 30 for each
        diagonal entry, off-diagonal entries 0) guards against starting in the basin of a lesser optimum."""
        diagonal = np.zeros(self.n_theta, bool)
        diagonal[:len(self.lower[0])] = self.lower[0] == self.lower[1]
        diagonal[len(self.lower[0]):] = True

        def theta(phi: np.ndarray) -> np.ndarray:
            return np.where(diagonal, np.sqrt(np.maximum(phi, 0.0)), phi)

        def deviance(phi: np.ndarray) -> float:
            return self.deviance(theta(phi))

        grid = []
        levels = _GRID if diagonal.sum() <= 3 else _GRID[1::2]  # keep the grid small for many components
        for ratios in itertools.product(levels, repeat=int(diagonal.sum())):
            phi = np.zeros(self.n_theta)
            phi[diagonal] = ratios
            grid.append((deviance(phi), tuple(phi)))
        value, start = min(grid)
        if not np.isfinite(value):
            raise ArithmeticError("the REML deviance could not be evaluated at any grid point")
        fit = optimize.minimize(deviance, np.array(start), method="L-BFGS-B", jac="3-point",
                                bounds=[(0.0, None) if d else (None, None) for d in diagonal],
                                options={"ftol": 1e-15, "gtol": 1e-10})
        phi = fit.x if np.isfinite(fit.fun) and fit.fun <= value else np.array(start)
        return np.where(diagonal, np.maximum(theta(phi), _BOUNDARY), phi)


def _start(model: MixedLM, kind: str) -> np.ndarray | None:
    """Packed (profiled, square-root scale) start values: statsmodels' default, or all components small/large."""
    if kind == "default":
        return None
    value = {"small": 0.1, "large": 3.0}[kind]
    return np.full(model.k_re2 + model.k_vc, np.sqrt(value))


def _fit_once(model: MixedLM, method: str, start, **options) -> tuple[object | None, list[str]]:
    if method in ("bfgs", "lbfgs"):
        options.setdefault("gtol", 1e-10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = model.fit(reml=True, method=[method], start_params=start, **options)
        except (np.linalg.LinAlgError, ValueError, ArithmeticError):
            return None, []
    notes = sorted({str(w.message).splitlines()[0] for w in caught})
    return (result if np.isfinite(result.llf) else None), notes


def gradient(model: MixedLM, result) -> float:
    """Largest absolute REML score at the fit (profiled, square-root-scale parameters, as the optimisers see them).

    A component at the boundary (square root below 1e-3: variance under 1e-6 of the residual's) counts as optimal
    when the score points back towards 0 (the Karush-Kuhn-Tucker condition for a maximum on s >= 0):
    statsmodels cannot evaluate a variance of exactly 0, so optimisers stop a little short of it."""
    packed = result.params_object.get_packed(use_sqrt=model.use_sqrt, has_fe=False)
    if not len(packed):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = np.asarray(model.score(packed, profile_fe=True), float)
    at_boundary = (np.abs(packed) < 1e-3) & (score * np.sign(packed) <= 0)
    score[at_boundary] = 0.0
    return float(np.max(np.abs(score)))


def reml_fit(model: MixedLM, locate: bool = True) -> tuple[object, str, dict[str, float | None], list[str], bool]:
    """The REML optimum. Returns (result, optimiser, {optimiser: llf}, warnings of the kept fit, converged), where
    converged means the kept fit's REML gradient is below tolerance, checked here rather than taken from the optimiser.

    locate=False skips the profiled search and runs statsmodels' optimisers only (slower; kept for cross-checks).
    BLAS runs on one thread here: the matrices are small, and with another process busy on the machine (a vLLM
    server, a second test worker) threaded BLAS made these fits 2.3x slower, where one thread lost nothing.
    """
    with _controller().limit(limits=1, user_api="blas"):
        return _reml_fit(model, locate)


_CONTROLLER: list[ThreadpoolController] = []


def _controller() -> ThreadpoolController:
    """One threadpoolctl controller per process: building one scans every loaded library (~3 ms), a limit does not."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def _reml_fit(model: MixedLM, locate: bool) -> tuple[object, str, dict[str, float | None], list[str], bool]:
    fits: dict[str, tuple[object | None, list[str]]] = {}
    scores: dict[int, float] = {}  # id(fit) -> its gradient check, computed once per fit

    def checked(fit) -> float:
        if id(fit) not in scores:
            scores[id(fit)] = gradient(model, fit)
        return scores[id(fit)]

    optimum = None
    if locate:
        with contextlib.suppress(ArithmeticError):
            optimum = ProfiledReml(model).optimum()
    if optimum is not None:
        # statsmodels' result at the located optimum, without iterating (its "failed to converge" notes are dropped
        # below when the gradient check passes); a BFGS polish from there when it does not.
        fits["profiled"] = _fit_once(model, "bfgs", optimum, maxiter=0)
        if fits["profiled"][0] is None or checked(fits["profiled"][0]) >= _GRADIENT_TOL:
            fits["profiled+bfgs"] = _fit_once(model, "bfgs", optimum)
    first = max((f for f, _ in fits.values() if f is not None), key=lambda f: f.llf, default=None)
    if first is None or checked(first) >= _GRADIENT_TOL:
        for name, method, start in _FALLBACK:
            fits[name] = _fit_once(model, method, _start(model, start))
        best_name = max((n for n, (f, _) in fits.items() if f is not None), key=lambda n: fits[n][0].llf, default=None)
        if best_name is None:
            raise ArithmeticError("no optimiser could fit the mixed model")
        packed = fits[best_name][0].params_object.get_packed(use_sqrt=model.use_sqrt, has_fe=False)
        polished = _fit_once(model, "bfgs", packed)
        if polished[0] is not None:
            fits[f"{best_name}+bfgs"] = polished
    best_name = max((n for n, (f, _) in fits.items() if f is not None), key=lambda n: fits[n][0].llf)
    tried = {n: (float(f.llf) if f is not None else None) for n, (f, _) in fits.items()}
    best, notes = fits[best_name]
    converged = checked(best) < _GRADIENT_TOL
    # statsmodels' own convergence/boundary notes describe the attempt, not the optimum we report: keep them only
    # when the kept fit is not at an optimum.
    return best, best_name, tried, ([] if converged else notes), converged
