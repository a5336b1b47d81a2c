"""The clustered CI is checked against the textbook CR1 formula computed here by hand with numpy/scipy."""

import numpy as np
import pytest
from scipy import stats

from evalkit.analysis.summary import clustered_mean_ci, summarise_rubric
from evalkit.content.rubrics import load_rubric
from evalkit.store.records import ItemScore


def cr1_mean_ci(y, groups, level=0.95):
    """Cameron & Miller (2015): V = G/(G-1) * (N-1)/(N-K) * (X'X)^-1 sum_g (X_g'e_g)^2 (X'X)^-1, t on G-1 df."""
    y, groups = np.asarray(y, float), np.asarray(groups)
    n, k = len(y), 1
    labels = np.unique(groups)
    g = len(labels)
    e = y - y.mean()
    meat = sum(e[groups == label].sum() ** 2 for label in labels)
    var = (g / (g - 1)) * ((n - 1) / (n - k)) * meat / n**2
    half = stats.t.ppf(0.5 + level / 2, g - 1) * np.sqrt(var)
    return y.mean(), y.mean() - half, y.mean() + half


def test_clustered_ci_matches_hand_computation():
    rng = np.random.default_rng(7)
    groups = np.repeat(["a", "b", "c", "d", "e"], [3, 1, 4, 2, 3])
    y = rng.normal(2, 1, len(groups)) + np.repeat(rng.normal(0, 1, 5), [3, 1, 4, 2, 3])
    ours = clustered_mean_ci(list(y), list(groups))
    assert ours == pytest.approx(cr1_mean_ci(y, groups), rel=1e-10)


def test_clustered_ci_is_wider_than_naive_when_clusters_agree_internally():
    groups = ["a"] * 5 + ["b"] * 5 + ["c"] * 5
    y = [1.0] * 5 + [2.0] * 5 + [3.0] * 5
    mean, low, high = clustered_mean_ci(y, groups)
    naive = stats.t.interval(0.95, len(y) - 1, loc=np.mean(y), scale=stats.sem(y))
    assert mean == 2.0 and (high - low) > (naive[1] - naive[0])


def test_one_cluster_gives_no_ci():
    assert clustered_mean_ci([1.0, 2.0], ["a", "a"]) == (1.5, None, None)


def _rows(session, rubric, values):
    return [ItemScore(session_id=session, source_id=session.split("#")[0], rubric=rubric.id,
                      rubric_version=rubric.version, item=item, valid=v is not None, expected=v,
                      reason=None if v is not None else "planted", judge="j") for item, v in values.items()]


def _views(rubric, scores, applies_to="all"):
    """Session views (the one view every reader uses) of sessions with these rows."""
    from datetime import datetime, timezone

    from evalkit.analysis.sessions import view_of
    from evalkit.store.records import Inclusion, Transcript

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    views = []
    for session, rows in scores.items():
        persona, replicate = session.split("#")
        transcript = Transcript(session_id=session, suite="t", unit="session", source_id=persona, replicate=int(replicate),
                                turns=[], stop_reason="max_turns", started_at=now, ended_at=now)
        views.append(view_of(transcript, rows, [rubric], None, inclusion=Inclusion(), threshold=None,
                             risk_only=frozenset({rubric.id}) if applies_to == "risk" else frozenset()))
    return views


def test_invalid_scores_are_counted_not_zeroed():
    rubric = load_rubric("tes")
    good = {i.id: 4.0 for i in rubric.items}
    bad = {**good, "warmth": None}
    scores = {"p1#0": _rows("p1#0", rubric, good), "p2#0": _rows("p2#0", rubric, bad),
              "p3#0": _rows("p3#0", rubric, {i: 6.0 for i in good})}
    summary = summarise_rubric(rubric, _views(rubric, scores))
    warmth = summary.items["warmth"]
    assert (warmth.n, warmth.n_invalid, warmth.mean) == (2, 1, 5.0)
    total = summary.composites["total"]
    assert (total.n, total.n_invalid, total.mean) == (2, 1, 5.0)
    assert summary.items["concern"].mean == pytest.approx(14 / 3)


def _safety_like_rubric():
    from evalkit.content.rubrics import Rubric

    pass_fail = {"min": 0, "max": 1, "labels": {0: "fail", 1: "pass"}}
    return Rubric.model_validate({
        "id": "mini-safety", "name": "t", "version": "1", "source": "a test rubric, not an instrument", "unit": "transcript",
        "scale": {"min": 0, "max": 3, "labels": {0: "a", 1: "b", 2: "c", 3: "d"}}, "judge_instructions": "rate",
        "items": [
            {"id": "asks", "name": "asks", "description": "asks about safety", "scale": pass_fail, "critical": True,
             "anchors": {0: "no", 1: "yes"}},
            {"id": "no_harm", "name": "no harm", "description": "gives nothing harmful", "scale": pass_fail,
             "critical": True, "anchors": {0: "no", 1: "yes"}},
            {"id": "stays", "name": "stays", "description": "stays with the client", "anchors": {i: "x" for i in range(4)}},
        ],
    })


def test_critical_failure_share_with_wilson_interval():
    rubric = _safety_like_rubric()
    assert rubric.range_of("asks") == (0, 1) and rubric.range_of("stays") == (0, 3)
    sessions = {  # P(pass) per critical item; a failure is P(pass) < 0.5
        "a#0": {"asks": 0.9, "no_harm": 0.8, "stays": 2.0},
        "b#0": {"asks": 0.2, "no_harm": 0.9, "stays": 1.0},   # fails
        "c#0": {"asks": 0.7, "no_harm": None, "stays": 1.0},  # cannot be assessed
        "d#0": {"asks": None, "no_harm": 0.1, "stays": 1.0},  # fails even though one item is missing
        "e#0": {"asks": 0.6, "no_harm": 0.6, "stays": 3.0},
    }
    from evalkit.judging import safety

    def surfaced_row(session, p):
        return ItemScore(session_id=session, source_id=session, rubric=safety.ID, rubric_version=safety.VERSION,
                         item=safety.ITEM, valid=p is not None, expected=p, judge="j")

    sessions.update({"f#0": {"asks": 0.1, "no_harm": 0.1, "stays": 0.0},   # risk never surfaced: not counted at all
                     "g#0": {"asks": 0.1, "no_harm": 0.1, "stays": 0.0}})  # surfaced check invalid: not counted either
    surfaced = {**{s: 0.9 for s in "abcde"}, "f": 0.1, "g": None}
    scores = {s: _rows(s, rubric, v) + [surfaced_row(s, surfaced[s[0]])] for s, v in sessions.items()}
    critical = summarise_rubric(rubric, _views(rubric, scores, "risk"), applies_to="risk").critical_failures
    assert (critical.sessions, critical.with_failure, critical.n_invalid) == (4, 2, 1)
    assert (critical.risk_sessions, critical.surfaced, critical.not_surfaced, critical.surfaced_unknown) == (7, 5, 1, 1)
    # Wilson (1927) score interval for 2/4 on the effective sample size, by hand: one session per persona, so the
    # cluster-robust variance is G/(G-1) p(1-p)/n, n_eff = n (G-1)/G, then times (z / t(G-1))^2 (Korn & Graubard).
    p, n, g, z = 0.5, 4, 4, stats.norm.ppf(0.975)
    n = n * (g - 1) / g * (z / stats.t.ppf(0.975, g - 1)) ** 2
    centre, half = (p + z**2 / (2 * n)) / (1 + z**2 / n), z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert (critical.ci_low, critical.ci_high) == pytest.approx((centre - half, centre + half), rel=1e-9)


def test_critical_items_must_be_pass_fail():
    from pydantic import ValidationError

    data = _safety_like_rubric().model_dump()
    data["items"][2]["critical"] = True
    with pytest.raises(ValidationError, match="must be pass/fail"):
        type(_safety_like_rubric()).model_validate(data)


def test_critical_items_that_do_not_apply_to_a_persona_do_not_make_a_session_unassessable():
    from evalkit.analysis.summary import critical_failure

    rubric = load_rubric("safety")
    every_session = [i.id for i in rubric.critical_items if not (i.applies_to_risk or i.applies_to_level or i.applies_if_safeguarding)]
    assert 0 < len(every_session) < len(rubric.critical_items)
    passed = {i: 1.0 for i in every_session}
    assert critical_failure(rubric, passed) is False  # the level- and type-restricted items were never rated: not missing
    assert critical_failure(rubric, {**passed, every_session[0]: None}) is None  # rated but unreadable: unassessable
    assert critical_failure(rubric, {**passed, every_session[0]: 0.2}) is True
