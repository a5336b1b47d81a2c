"""Win rates against a baseline, and Bradley-Terry strengths for several models, with the persona as the unit.

Head-to-head: per persona, the candidate's scores minus the baseline's over the persona's matched sessions are
averaged (direction per metric); the candidate wins the persona when the mean is better, loses it when worse, ties
when equal. Exact two-sided sign test over personas with ties dropped (scipy binomtest), Wilson interval on the
persona win rate (statsmodels). Session wins, losses and ties are kept beside them as description only: a persona's
replicates share how that model suits that persona, so counting them as independent trials made the sign test
reject 13.5% of null comparisons (10 personas x 3 replicates) and the Wilson interval cover 86.6%.

Bradley-Terry: P(i beats j) = logistic(s_i - s_j), fitted by maximum likelihood as a logistic regression on every
matched session x pair of conditions (statsmodels GLM), strengths relative to the first model. Intervals are
cluster-robust (CR1, clustered by persona) on t(personas - 1), so all comparisons of one persona's sessions count
as one cluster. When the win graph is not strongly connected (a model won, or lost, every comparison; Ford's
condition) the maximum-likelihood estimate does not exist: the result is absent, says which models are separated,
and carries no strength and no interval (an interval there would come from a prior, not from the data).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import stats
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from statsmodels.stats.proportion import proportion_confint

from evalkit.statistics.results import (
    BradleyTerryResult,
    BradleyTerryStrength,
    HeadToHead,
    LengthControlledWinRate,
    WinSummary,
)

_SIGN_METHOD = ("personas as units: a persona is won, lost or tied on the mean of its matched sessions; exact two-sided "
                "sign test over personas (scipy binomtest, ties dropped); Wilson interval on the persona win rate (statsmodels)")
_SESSION_METHOD = ("sessions as units (no persona labels): exact two-sided sign test (scipy binomtest, ties dropped); Wilson "
                   "interval (statsmodels); valid only if sessions are independent")


def persona_of(session_key: str) -> str:
    """The persona of a matched-session key "persona#replicate"."""
    return session_key.rsplit("#", 1)[0]


def win_summary(wins: int, losses: int, ties: int, level: float = 0.95, *, unit: str = "persona",
                sessions: tuple[int, int, int] | None = None) -> WinSummary:
    """Sign test and Wilson interval over units (personas, or sessions when nothing groups them)."""
    decided = wins + losses
    total = decided + ties
    fields: dict = {"win_rate": None, "ci_low": None, "ci_high": None, "sign_test_p": None}
    if decided:
        low, high = proportion_confint(wins, decided, alpha=1 - level, method="wilson")
        fields = {"win_rate": wins / decided, "ci_low": float(low), "ci_high": float(high),
                  "sign_test_p": float(stats.binomtest(wins, decided, 0.5).pvalue)}
    session_counts = dict(zip(("session_wins", "session_losses", "session_ties"), sessions, strict=True)) if sessions else {}
    return WinSummary(method=_SIGN_METHOD if unit == "persona" else _SESSION_METHOD, unit=unit, wins=wins, losses=losses,  # type: ignore[arg-type]
                      ties=ties, n=total, **fields, win_rate_ties_half=(wins + 0.5 * ties) / total if total else None,
                      **session_counts)


def _personas(index: pd.Index, personas: Mapping[str, str] | Callable[[str], str] | None) -> np.ndarray:
    if personas is None:
        return np.array([persona_of(str(k)) for k in index])
    if callable(personas):
        return np.array([personas(str(k)) for k in index])
    return np.array([personas[k] for k in index])


def head_to_head(candidate: pd.Series, baseline: pd.Series, better: str, tie_margin: float = 0.0,
                 personas: Mapping[str, str] | Callable[[str], str] | None = None, level: float = 0.95) -> HeadToHead:
    """`candidate`, `baseline`: scores indexed by matched session key ("persona#replicate", or give `personas`).

    Wins, losses and ties count personas (the candidate's mean advantage over the persona's matched sessions above
    `tie_margin`, below minus it, or neither); the session counts are kept as description."""
    both = pd.concat([candidate.rename("c"), baseline.rename("b")], axis=1).dropna()
    sign = 1.0 if better == "higher" else -1.0
    diff = (both["c"].to_numpy() - both["b"].to_numpy()) * sign
    session_wins, session_losses = int((diff > tie_margin).sum()), int((diff < -tie_margin).sum())
    codes, _ = pd.factorize(_personas(both.index, personas))
    means = np.bincount(codes, weights=diff) / np.bincount(codes) if len(diff) else diff
    wins, losses = int((means > tie_margin).sum()), int((means < -tie_margin).sum())
    summary = win_summary(wins, losses, len(means) - wins - losses, level,
                          sessions=(session_wins, session_losses, len(diff) - session_wins - session_losses))
    return HeadToHead(**summary.model_dump(), matched=len(both))


def clustered_outcomes(outcomes: Mapping[str, str], personas: Mapping[str, str] | Callable[[str], str] | None = None,
                       level: float = 0.95) -> WinSummary:
    """Per-session outcomes ("win", "loss", "tie") summarised over personas: a persona is won when it holds more won
    sessions than lost ones, lost when fewer, tied otherwise."""
    keys = pd.Index(list(outcomes))
    values = pd.Series([{"win": 1, "loss": -1}.get(o, 0) for o in outcomes.values()], index=keys, dtype=float)
    net = values.groupby(_personas(keys, personas)).sum() if len(values) else values
    wins, losses = int((net > 0).sum()), int((net < 0).sum())
    session = (int((values > 0).sum()), int((values < 0).sum()), int((values == 0).sum()))
    return win_summary(wins, losses, len(net) - wins - losses, level, sessions=session)


def length_controlled_win_rate(outcomes: np.ndarray, length_diff: np.ndarray) -> LengthControlledWinRate:
    """P(win) at zero length difference from a logistic model of win ~ length difference (ties excluded).

    Length in characters, scaled to thousands so the slope is readable. A point estimate (sessions as rows), no test.
    """
    from statsmodels.discrete.discrete_model import Logit
    from statsmodels.tools.sm_exceptions import PerfectSeparationError

    method = ("logistic regression win ~ 1 + length difference / 1000 chars over decided sessions (statsmodels Logit); "
              "P(win) at 0; a point estimate, no test")
    if len(outcomes) < 3 or len(set(np.asarray(outcomes).tolist())) < 2:
        return LengthControlledWinRate(method=method, n=int(len(outcomes)),
                                       absent_reason="needs at least 3 decided pairs with both wins and losses")
    lengths = np.asarray(length_diff, float) / 1000.0
    if np.ptp(lengths) == 0:  # the length effect and the intercept are the same column: nothing to control for
        return LengthControlledWinRate(method=method, n=int(len(outcomes)),
                                       absent_reason="every pair has the same length difference, so length cannot be "
                                                     "separated from the win rate")
    x = np.column_stack([np.ones(len(lengths)), lengths])
    try:
        fit = Logit(np.asarray(outcomes, float), x).fit(disp=0)
    except (np.linalg.LinAlgError, PerfectSeparationError) as exc:
        return LengthControlledWinRate(method=method, n=int(len(outcomes)),
                                       absent_reason=f"the logistic model could not be fitted ({type(exc).__name__})")
    intercept, slope = fit.params
    return LengthControlledWinRate(method=method, win_rate_at_equal_length=float(1 / (1 + np.exp(-intercept))),
                                   intercept=float(intercept), slope_per_1000_chars=float(slope), n=int(len(outcomes)))


# --- Bradley-Terry ------------------------------------------------------------------------------------------------


def _codes(outcomes: pd.DataFrame, models: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Integer-coded winners and losers of an outcomes frame."""
    index = {m: i for i, m in enumerate(models)}
    unknown = set(outcomes["winner"]).union(outcomes["loser"]) - set(index)
    if unknown:
        raise ValueError(f"outcomes name models not in the list: {sorted(unknown)}")
    return outcomes["winner"].map(index).to_numpy(int), outcomes["loser"].map(index).to_numpy(int)


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


def _method(level: float, clustered: bool) -> str:
    text = ("Bradley-Terry maximum likelihood, P(i beats j) = logistic(s_i - s_j), as a logistic regression on every matched "
            "session x pair of conditions (statsmodels GLM, binomial), strengths relative to the first model")
    if clustered:
        text += f"; {level:.0%} intervals cluster-robust (CR1) by persona on t(personas - 1)"
    return text + "; not estimated when the win graph is separated (no finite maximum-likelihood estimate)"


def bradley_terry(outcomes: pd.DataFrame, models: list[str], *, groups: str | None = "persona",
                  level: float = 0.95) -> BradleyTerryResult:
    """Strengths (log-odds scale, first model fixed at 0) with intervals clustered by `groups`.

    `outcomes`: rows with columns winner, loser and the cluster column (`groups`, e.g. persona); `groups=None` fits
    without intervals. A separated win graph gives an absent result naming the separated models."""
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM

    k = len(models)
    winners, losers = _codes(outcomes, models)
    w = win_matrix(winners, losers, k)
    wins, losses = w.sum(axis=1), w.sum(axis=0)
    counts = {m: BradleyTerryStrength(strength=None, wins=int(wins[i]), losses=int(losses[i])) for i, m in enumerate(models)}
    clusters = pd.factorize(outcomes[groups])[0] if groups is not None and len(outcomes) else np.zeros(len(outcomes), int)
    personas = int(clusters.max() + 1) if groups is not None and len(clusters) else 0
    base = dict(method=_method(level, groups is not None), models=models, reference=models[0], comparisons=int(w.sum()),
                personas=personas, level=level, unit=groups or "comparison")
    if not strongly_connected(w):
        separated = [m for i, m in enumerate(models) if wins[i] == 0 or losses[i] == 0]
        what = {i: "no comparison" if wins[i] + losses[i] == 0 else "won every comparison" if losses[i] == 0
                else "lost every comparison" for i in range(k)}
        named = "; ".join(f"{m} {what[i]}" for i, m in enumerate(models) if m in separated)
        reason = ("separated (" + (named if separated else "the models split into groups that beat each other one way "
                                   "only") + "): the maximum-likelihood strengths do not exist, so no strength and no "
                  "interval is reported")
        return BradleyTerryResult(**base, strengths=counts, separated=True, separated_models=separated, converged=False,
                                  absent_reason=reason)
    a, b = np.minimum(winners, losers), np.maximum(winners, losers)
    y = (winners == a).astype(float)  # 1: the lower-indexed model of the pair won
    x = np.zeros((len(y), k))
    x[np.arange(len(y)), a] += 1.0
    x[np.arange(len(y)), b] -= 1.0
    model = GLM(y, x[:, 1:], family=families.Binomial())
    clustered = groups is not None and personas >= 2
    fit = (model.fit(cov_type="cluster", cov_kwds={"groups": clusters}, use_t=True) if clustered else model.fit())
    estimate = np.concatenate([[0.0], np.asarray(fit.params, float)])
    strengths = {models[0]: counts[models[0]].model_copy(update={"strength": 0.0, "se": 0.0, "ci_low": 0.0, "ci_high": 0.0})}
    if clustered:
        se = np.asarray(fit.bse, float)
        low, high = np.asarray(fit.conf_int(alpha=1 - level), float).T
    for i, m in enumerate(models[1:]):
        update = {"strength": float(estimate[i + 1])}
        if clustered:
            update |= {"se": float(se[i]), "ci_low": float(low[i]), "ci_high": float(high[i])}
        strengths[m] = counts[m].model_copy(update=update)
    return BradleyTerryResult(**base, df=personas - 1 if clustered else None, strengths=strengths, separated=False,
                              separated_models=[], converged=bool(fit.converged))


def pairwise_outcomes(table: pd.DataFrame, conditions: list[str], better: str, tie_margin: float = 0.0) -> pd.DataFrame:
    """Every matched session x pair of conditions as a winner/loser row (ties dropped), with the session's persona
    (the table's persona column, or the session key's persona part)."""
    wide = table.pivot_table(index="session", columns="condition", values="value", aggfunc="first")
    if "persona" in table:
        persona = table.drop_duplicates("session").set_index("session")["persona"].astype(str)
    else:
        persona = pd.Series({s: persona_of(str(s)) for s in wide.index})
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
        return pd.DataFrame(columns=["session", "persona", "winner", "loser"])
    out = pd.concat(frames, ignore_index=True)
    out["persona"] = out["session"].map(persona).to_numpy()
    return out[["session", "persona", "winner", "loser"]]
