"""Win rates against a baseline, and Bradley-Terry strengths for several models.

Head-to-head: per matched session, the candidate wins when its score is better than the baseline's
(direction per metric), loses when worse, ties when equal. Exact two-sided sign test with ties
dropped (scipy binomtest), Wilson 95% interval on the win rate (statsmodels).

Bradley-Terry: P(i beats j) = logistic(s_i - s_j). Strengths are the posterior mode (MAP) under an
independent N(0, prior_sd^2) prior on every s_i, i.e. a ridge-penalised likelihood: finite even when a
model won (or lost) every comparison, where the plain maximum-likelihood estimate does not exist. They
are reported relative to the first model. Percentile intervals come from resampling sessions (all of a
session's comparisons together); each resample is fitted on integer-coded win counts (scipy trust-region
Newton with analytic gradient and Hessian) and resamples whose win graph is not strongly connected
(no finite MLE) are counted and reported, not dropped.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import optimize, stats
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from statsmodels.stats.proportion import proportion_confint

from evalkit.statistics.results import (
    BradleyTerryBootstrap,
    BradleyTerryResult,
    BradleyTerryStrength,
    HeadToHead,
    LengthControlledWinRate,
    WinSummary,
)

DEFAULT_PRIOR_SD = 2.0
_SIGN_METHOD = "exact two-sided sign test (scipy binomtest, ties dropped); Wilson interval (statsmodels)"


def win_summary(wins: int, losses: int, ties: int, level: float = 0.95) -> WinSummary:
    decided = wins + losses
    total = decided + ties
    fields: dict = {"win_rate": None, "ci_low": None, "ci_high": None, "sign_test_p": None}
    if decided:
        low, high = proportion_confint(wins, decided, alpha=1 - level, method="wilson")
        fields = {"win_rate": wins / decided, "ci_low": float(low), "ci_high": float(high),
                  "sign_test_p": float(stats.binomtest(wins, decided, 0.5).pvalue)}
    return WinSummary(method=_SIGN_METHOD, wins=wins, losses=losses, ties=ties, n=total, **fields,
                      win_rate_ties_half=(wins + 0.5 * ties) / total if total else None)


def head_to_head(candidate: pd.Series, baseline: pd.Series, better: str, tie_margin: float = 0.0) -> HeadToHead:
    """`candidate`, `baseline`: scores indexed by matched session key."""
    both = pd.concat([candidate.rename("c"), baseline.rename("b")], axis=1).dropna()
    diff = (both["c"] - both["b"]) * (1 if better == "higher" else -1)
    wins, losses = int((diff > tie_margin).sum()), int((diff < -tie_margin).sum())
    summary = win_summary(wins, losses, len(diff) - wins - losses)
    return HeadToHead(**summary.model_dump(), matched=len(both))


def length_controlled_win_rate(outcomes: np.ndarray, length_diff: np.ndarray) -> LengthControlledWinRate:
    """P(win) at zero length difference from a logistic model of win ~ length difference (ties excluded).

    Length in characters, scaled to thousands so the slope is readable.
    """
    method = "logistic regression win ~ 1 + length difference / 1000 chars (statsmodels Logit); P(win) at 0"
    if len(outcomes) < 3 or len(set(np.asarray(outcomes).tolist())) < 2:
        return LengthControlledWinRate(method=method, n=int(len(outcomes)),
                                       absent_reason="needs at least 3 decided pairs with both wins and losses")
    lengths = np.asarray(length_diff, float) / 1000.0
    if np.ptp(lengths) == 0:  # the length effect and the intercept are the same column: nothing to control for
        return LengthControlledWinRate(method=method, n=int(len(outcomes)),
                                       absent_reason="every pair has the same length difference, so length cannot be "
                                                     "separated from the win rate")
    x = sm.add_constant(lengths, has_constant="add")
    try:
        fit = sm.Logit(np.asarray(outcomes, float), x).fit(disp=0)
    except (np.linalg.LinAlgError, sm.tools.sm_exceptions.PerfectSeparationError) as exc:
        return LengthControlledWinRate(method=method, n=int(len(outcomes)),
                                       absent_reason=f"the logistic model could not be fitted ({type(exc).__name__})")
    intercept, slope = fit.params
    return LengthControlledWinRate(method=method, win_rate_at_equal_length=float(1 / (1 + np.exp(-intercept))),
                                   intercept=float(intercept), slope_per_1000_chars=float(slope), n=int(len(outcomes)))


# --- Bradley-Terry ------------------------------------------------------------------------------------------------


def _codes(outcomes: pd.DataFrame, models: list[str], groups: str | None = None):
    """Integer-coded winners, losers (and groups) of an outcomes frame."""
    index = {m: i for i, m in enumerate(models)}
    unknown = set(outcomes["winner"]).union(outcomes["loser"]) - set(index)
    if unknown:
        raise ValueError(f"outcomes name models not in the list: {sorted(unknown)}")
    winners = outcomes["winner"].map(index).to_numpy(int)
    losers = outcomes["loser"].map(index).to_numpy(int)
    if groups is None:
        return winners, losers
    codes, uniques = pd.factorize(outcomes[groups])
    return winners, losers, codes, len(uniques)


def win_matrix(winners: np.ndarray, losers: np.ndarray, k: int) -> np.ndarray:
    """W[i, j] = comparisons i won against j."""
    w = np.zeros((k, k))
    np.add.at(w, (winners, losers), 1.0)
    return w


def strongly_connected(w: np.ndarray) -> np.ndarray:
    """Ford's condition, for one win matrix (k, k) or a stack (..., k, k): the plain MLE exists iff every split of
    the models has a win each way across it. A stack is one graph of disjoint copies, so scipy labels it in one call."""
    w = np.asarray(w)
    k = w.shape[-1]
    stack = w.reshape(-1, k, k) > 0
    copy, i, j = np.nonzero(stack)
    graph = coo_matrix((np.ones(len(copy)), (copy * k + i, copy * k + j)), shape=(len(stack) * k,) * 2)
    labels = connected_components(graph, directed=True, connection="strong")[1].reshape(len(stack), k)
    labels.sort(axis=1)
    one_component = (np.diff(labels, axis=1) == 0).all(axis=1)
    return one_component.reshape(w.shape[:-2]) if w.ndim > 2 else bool(one_component[0])


def _neg_log_posterior(theta: np.ndarray, w: np.ndarray, precision: float):
    """-(log-likelihood + log prior), its gradient and Hessian for win matrix w (vectorised over pairs)."""
    diff = theta[:, None] - theta[None, :]
    p = 1.0 / (1.0 + np.exp(-diff))  # P(i beats j)
    # log p = -log(1 + exp(-diff)), computed stably
    loglik = -(w * np.logaddexp(0.0, -diff)).sum()
    residual = w * (1.0 - p)  # d/d theta_i of w_ij log p_ij
    grad = residual.sum(axis=1) - residual.sum(axis=0)
    n = w + w.T
    weight = n * p * (1.0 - p)  # symmetric
    hess = -weight
    np.fill_diagonal(hess, 0.0)
    hess[np.diag_indices_from(hess)] = weight.sum(axis=1) - np.diag(weight)
    value = -loglik + 0.5 * precision * theta @ theta
    return value, -grad + precision * theta, hess + precision * np.eye(len(theta))


def _fit(w: np.ndarray, prior_sd: float | None, start: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """MAP strengths (all k free, prior makes them identifiable), or with prior_sd=None the MLE with the
    first strength fixed at 0. Returns (strengths minus the first, converged)."""
    k = len(w)
    if prior_sd is None:
        def fun(free):
            theta = np.concatenate([[0.0], free])
            value, grad, hess = _neg_log_posterior(theta, w, 0.0)
            return value, grad[1:], hess[1:, 1:]
        x0 = np.zeros(k - 1) if start is None else start[1:]
    else:
        precision = 1.0 / prior_sd**2

        def fun(theta):
            return _neg_log_posterior(theta, w, precision)
        x0 = np.zeros(k) if start is None else start
    cache: dict = {}

    def evaluate(x):
        key = x.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = fun(x)
        return cache[key]

    result = optimize.minimize(lambda x: evaluate(x)[0], x0, jac=lambda x: evaluate(x)[1], hess=lambda x: evaluate(x)[2],
                               method="trust-exact", options={"gtol": 1e-10, "maxiter": 500})
    theta = np.concatenate([[0.0], result.x]) if prior_sd is None else result.x - result.x[0]
    converged = bool(np.max(np.abs(evaluate(result.x)[1])) < 1e-7)
    return theta, converged


def _fit_many(ws: np.ndarray, prior_sd: float, start: np.ndarray, iterations: int = 100) -> np.ndarray:
    """MAP strengths (relative to the first model) for a stack of win matrices: damped Newton on all of them at
    once (the penalised objective is strictly convex, Hessian >= I / prior_sd^2). Any that has not reached a
    gradient below 1e-9 is refitted one by one with scipy (`_fit`)."""
    rounds, k = ws.shape[:2]
    precision = 1.0 / prior_sd**2
    theta = np.tile(start - start.mean(), (rounds, 1))
    n = ws + ws.transpose(0, 2, 1)
    eye = np.eye(k)

    def objective(t):
        diff = t[:, :, None] - t[:, None, :]
        return (ws * np.logaddexp(0.0, -diff)).sum(axis=(1, 2)) + 0.5 * precision * (t * t).sum(axis=1), diff

    value, diff = objective(theta)
    done = np.zeros(rounds, bool)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-diff))
        residual = ws * (1.0 - p)
        grad = -(residual.sum(axis=2) - residual.sum(axis=1)) + precision * theta
        done = np.abs(grad).max(axis=1) < 1e-9
        if done.all():
            break
        weight = n * p * (1.0 - p)
        hess = -weight + eye * (weight.sum(axis=2)[:, :, None]) + precision * eye
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        scale = np.ones(rounds)
        for _halving in range(30):  # step-halving until the objective does not increase
            trial = theta - scale[:, None] * step
            trial_value, trial_diff = objective(trial)
            worse = (trial_value > value + 1e-12 * np.abs(value)) & ~done
            if not worse.any():
                break
            scale[worse] /= 2
        theta, value, diff = trial, trial_value, trial_diff
    for r in np.flatnonzero(~done):
        theta[r], _ = _fit(ws[r], prior_sd, start)
    return theta - theta[:, :1]


def _method(prior_sd: float | None) -> str:
    if prior_sd is None:
        return "Bradley-Terry maximum likelihood, P(i beats j) = logistic(s_i - s_j), first model fixed at 0"
    return (f"Bradley-Terry posterior mode (ridge-penalised likelihood): P(i beats j) = logistic(s_i - s_j), "
            f"s_i ~ N(0, {prior_sd:g}^2) independently; reported relative to the first model")


def bradley_terry(outcomes: pd.DataFrame, models: list[str], prior_sd: float | None = DEFAULT_PRIOR_SD) -> BradleyTerryResult:
    """Strengths (log-odds scale, first model fixed at 0). `outcomes`: rows with columns winner, loser.

    prior_sd=None gives the plain maximum-likelihood estimate (Hunter's MM fixed point); it does not exist
    under separation (then `converged` is False and the strengths are where the optimiser stopped)."""
    winners, losers = _codes(outcomes, models)
    w = win_matrix(winners, losers, len(models))
    theta, converged = _fit(w, prior_sd)
    separated = not strongly_connected(w)
    if prior_sd is None and separated:
        converged = False
    wins, losses = w.sum(axis=1), w.sum(axis=0)
    return BradleyTerryResult(
        method=_method(prior_sd), models=models, reference=models[0], prior_sd=prior_sd, comparisons=int(w.sum()),
        strengths={m: BradleyTerryStrength(strength=float(theta[i]), wins=int(wins[i]), losses=int(losses[i]))
                   for i, m in enumerate(models)},
        separated=separated, separated_models=[m for i, m in enumerate(models) if wins[i] == 0 or losses[i] == 0],
        converged=converged)


def bradley_terry_bootstrap(outcomes: pd.DataFrame, models: list[str], *, groups: str = "session", rounds: int = 1000,
                            seed: int = 0, level: float = 0.95, prior_sd: float = DEFAULT_PRIOR_SD) -> BradleyTerryResult:
    """Bradley-Terry strengths with percentile CIs from resampling `groups` (all their comparisons together).

    Every resample is fitted with the same prior as the point estimate, so no resample is dropped and no
    interval end is where an optimiser happened to stop; resamples without a finite MLE are counted."""
    if prior_sd is None:
        raise ValueError("the bootstrap needs a prior (prior_sd): without it resamples under separation have no estimate")
    point = bradley_terry(outcomes, models, prior_sd)
    k = len(models)
    winners, losers, session, sessions = _codes(outcomes, models, groups)
    per_session = np.zeros((sessions, k, k))
    np.add.at(per_session, (session, winners, losers), 1.0)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(sessions, np.full(sessions, 1.0 / sessions), size=rounds)  # = resampling with replacement
    draws_w = (counts @ per_session.reshape(sessions, k * k)).reshape(rounds, k, k)
    start = np.array([point.strengths[m].strength for m in models])
    played = draws_w.sum(axis=(1, 2)) > 0
    draws = np.full((rounds, k), np.nan)
    draws[played] = _fit_many(draws_w[played], prior_sd, start)
    usable = int(played.sum())
    separated = int((~strongly_connected(draws_w[played])).sum())
    wins, losses = draws_w.sum(axis=2), draws_w.sum(axis=1)
    in_play = (wins + losses) > 0
    never_lost = (in_play & (losses == 0)).sum(axis=0)
    never_won = (in_play & (wins == 0)).sum(axis=0)
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=0) if usable else (np.full(k, np.nan),) * 2
    strengths = {m: point.strengths[m].model_copy(update={"ci_low": float(low[i]), "ci_high": float(high[i]),
                                                          "never_lost_resamples": int(never_lost[i]),
                                                          "never_won_resamples": int(never_won[i])})
                 for i, m in enumerate(models)}
    method = point.method + f"; {level:.0%} percentile intervals from {rounds} resamples of {groups}s, each fitted with the same prior"
    return point.model_copy(update={
        "method": method, "strengths": strengths,
        "bootstrap": BradleyTerryBootstrap(rounds=rounds, usable=usable, separated_resamples=separated, seed=seed,
                                           level=level, unit=groups)})


def pairwise_outcomes(table: pd.DataFrame, conditions: list[str], better: str, tie_margin: float = 0.0) -> pd.DataFrame:
    """Every matched session x pair of conditions as a winner/loser row (ties dropped)."""
    wide = table.pivot_table(index="session", columns="condition", values="value", aggfunc="first")
    sign = 1 if better == "higher" else -1
    frames = []
    for a, b in itertools.combinations(conditions, 2):
        if a not in wide or b not in wide:
            continue
        pair = wide[[a, b]].dropna()
        d = (pair[a] - pair[b]).to_numpy() * sign
        won, lost = d > tie_margin, d < -tie_margin
        frames.append(pd.DataFrame({"session": pair.index[won], "winner": a, "loser": b}))
        frames.append(pd.DataFrame({"session": pair.index[lost], "winner": b, "loser": a}))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["session", "winner", "loser"])
    return pd.concat(frames, ignore_index=True)[["session", "winner", "loser"]]
