"""evalkit_counsel_pref cannot be solved without reading the client.

Every baseline in evalkit.lm_eval_tasks.shortcuts sees only the two replies of a pair. On the shipped pairs
each must stay near chance. On a synthetic set built with v1's flaw (every preferred reply asks a question)
the same code must find the shortcut, so a pass on the shipped pairs means the pairs are balanced, not that
the baselines are blind.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import pytest

from evalkit.lm_eval_tasks.shortcuts import shortcut_baselines

pytest.importorskip("sklearn")

CEILING, FLOOR = 0.60, 0.40
ASKING_IS_WRONG = ("question-at-wrong-moment", "withholding-information", "missed-imminent-risk")


@pytest.fixture(scope="module")
def pairs():
    from evalkit.lm_eval_tasks.utils import load_pairs

    return load_pairs().pairs


@pytest.fixture(scope="module")
def baselines(pairs) -> dict[str, float]:
    return shortcut_baselines(pairs)


def test_no_reply_only_rule_solves_the_pairs(baselines):
    table = ", ".join(f"{name}={value:.3f}" for name, value in baselines.items())
    for name in ("question_mark", "longer", "bow_logreg", "tfidf_logreg"):
        assert baselines[name] <= CEILING, f"{name} solves the pairs without the client: {table}"
    for name in ("question_mark", "longer"):  # the reverse rule ("pick the reply without ?", "the shorter") too
        assert baselines[name] >= FLOOR, f"the reverse of {name} solves the pairs without the client: {table}"


def test_pairs_where_asking_is_the_wrong_move(pairs):
    counts = Counter(pair.breaks for pair in pairs)
    for label in ASKING_IS_WRONG:
        assert counts[label] >= 10, (label, counts[label])


def test_ids_are_unique_and_the_two_replies_differ(pairs):
    ids = [pair.id for pair in pairs]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    for pair in pairs:
        assert pair.preferred.strip().casefold() != pair.dispreferred.strip().casefold(), pair.id


def test_the_baselines_find_a_planted_shortcut():
    """v1's flaw on purpose: the preferred reply always asks, the dispreferred one never does."""
    topics = ["work", "money", "your sister", "sleep", "the exams", "your father", "the move", "the diagnosis",
              "your marriage", "the baby", "school", "the debt", "your health", "the break-up", "your son",
              "the funeral", "your boss", "the drinking", "the court case", "your mother", "the new job",
              "the divorce", "your friends", "the surgery", "the neighbours", "the visa", "your daughter",
              "the redundancy", "your grandmother", "the pregnancy", "the bullying", "the loan", "your brother",
              "the accident", "the wedding", "your partner", "the pain", "the flat", "your team", "the trial"]
    planted = [SimpleNamespace(id=f"s{i:02d}",
                               preferred=f"It sounds like {topic} has been weighing on you. What has {topic} been like for you lately?",
                               dispreferred=f"You should stop worrying about {topic}. Just try to relax and it will pass.")
               for i, topic in enumerate(topics)]
    found = shortcut_baselines(planted)
    assert found["question_mark"] == 1.0 and found["ends_with_question"] == 1.0
    assert found["bow_logreg"] > 0.9 and found["tfidf_logreg"] > 0.9, found


def test_importing_the_module_does_not_load_sklearn():
    code = ("import sys, evalkit\n"
            "before = {m for m in sys.modules if m.split('.')[0] == 'sklearn'}\n"
            "import evalkit.lm_eval_tasks.shortcuts\n"
            "assert {m for m in sys.modules if m.split('.')[0] == 'sklearn'} == before\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
