"""evalkit_counsel_pref cannot be solved without reading the client.

evalkit.lm_eval_tasks.shortcuts runs a battery of reply-only shortcuts (single-feature rules with the direction
chosen out of sample, a logistic regression on all features, character and word n-gram TF-IDF models), each
cross-validated over pairs. On the shipped pairs the best of them must stay at or below CEILING. On a copy of
the pairs with a planted flaw (the preferred reply is always one sentence longer) the same battery must find
it, so a pass on the shipped pairs means the pairs are balanced, not that the battery is blind.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import pytest

from evalkit.lm_eval_tasks.shortcuts import FEATURES, battery, load_pairs, table

pytest.importorskip("sklearn")

CEILING = 0.60
ASKING_IS_WRONG = ("question-at-wrong-moment", "withholding-information", "missed-imminent-risk")
PLANTED = " Whatever you decide to do next, I will be here to listen and to think it through with you."


@pytest.fixture(scope="module")
def pairs():
    return load_pairs().pairs


@pytest.fixture(scope="module")
def result(pairs):
    return battery(pairs)


def test_the_battery_has_at_least_30_reply_only_features(result):
    assert len(FEATURES) >= 30 and result.n_features == len(FEATURES)
    rules = {s.name for s in result.shortcuts if s.name.startswith("rule:")}
    assert rules == {f"rule:{name}" for name in FEATURES}
    assert {"features_logreg", "char_tfidf", "word_tfidf"} <= {s.name for s in result.shortcuts}
    assert all(0.0 <= s.accuracy <= 1.0 for s in result.shortcuts)


def test_no_reply_only_shortcut_solves_the_pairs(result):
    assert result.best.accuracy == max(s.accuracy for s in result.shortcuts)
    assert result.best.accuracy <= CEILING, (f"{result.best.name} solves the pairs without the client "
                                             f"(chance ceiling {result.shuffle_max:.3f}):\n{table(result, 10)}")


def test_the_chance_ceiling_is_reported(result):
    """The same selection (best of every shortcut) on label-shuffled copies: what luck alone reaches."""
    assert len(result.shuffle_best) >= 20
    assert result.shuffle_max == max(result.shuffle_best)
    assert 0.5 < result.shuffle_max < 0.75, result.shuffle_best


@pytest.mark.parametrize("longer", ["preferred", "dispreferred"])
def test_the_battery_finds_a_planted_shortcut(pairs, longer):
    """The flaw on purpose: one reply of every pair gets the same extra sentence. Found in either direction."""
    planted = [SimpleNamespace(id=p.id, preferred=p.preferred + (PLANTED if longer == "preferred" else ""),
                               dispreferred=p.dispreferred + (PLANTED if longer == "dispreferred" else ""))
               for p in pairs]
    found = battery(planted, shuffles=0, repeats=1)
    assert found.best.accuracy > 0.8, table(found, 5)
    assert found.accuracy("rule:sentences") > 0.8 and found.accuracy("char_tfidf") > 0.8, table(found, 10)
    direction = next(s.direction for s in found.shortcuts if s.name == "rule:sentences")
    assert direction == ("larger" if longer == "preferred" else "smaller")


def test_pairs_where_asking_is_the_wrong_move(pairs):
    counts = Counter(pair.breaks for pair in pairs)
    for label in ASKING_IS_WRONG:
        assert counts[label] >= 10, (label, counts[label])


def test_ids_are_unique_and_the_two_replies_differ(pairs):
    ids = [pair.id for pair in pairs]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    for pair in pairs:
        assert pair.preferred.strip().casefold() != pair.dispreferred.strip().casefold(), pair.id


def test_importing_the_module_does_not_load_sklearn():
    code = ("import sys, evalkit\n"
            "before = {m for m in sys.modules if m.split('.')[0] == 'sklearn'}\n"
            "import evalkit.lm_eval_tasks.shortcuts\n"
            "assert {m for m in sys.modules if m.split('.')[0] == 'sklearn'} == before\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
