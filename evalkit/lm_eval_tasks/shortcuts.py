"""Shortcut baselines for evalkit_counsel_pref: how far can a rule that never reads the client get?

Each pair in counsel_pref_pairs.yaml has a preferred and a dispreferred counsellor reply to one client
message. If a rule that looks only at the replies picks the preferred one far more often than chance, the
task no longer measures whether a model reads the client; it measures whether the model likes that
surface style. Every baseline here is such a rule. Accuracy is the share of pairs where the rule picks
the preferred reply; a pair the rule cannot decide (both replies look the same to it) counts 0.5, so
chance is 0.50 and the reverse of any rule scores 1 minus its accuracy.

    python -m evalkit.lm_eval_tasks.shortcuts     # the Markdown table for the shipped pairs

scikit-learn is imported only inside the classifier baselines, so importing this module stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol

# "Counsellors should not give advice": the naive rule that a reply telling the client what to do is the
# worse one. Matched anywhere in the reply, case-insensitively.
DIRECTIVE = re.compile(r"\b(you should|you need to|you must|try|i suggest|i'd suggest|i would suggest|please call|please)\b",
                       re.IGNORECASE)
FOLDS = 5
SEED = 0


class Pair(Protocol):
    id: str
    preferred: str
    dispreferred: str


def _pick(pairs: Sequence[Pair], score: Callable[[str], float]) -> float:
    """Accuracy of 'pick the reply with the higher score'; equal scores are a tie worth 0.5."""
    total = 0.0
    for pair in pairs:
        a, b = score(pair.preferred), score(pair.dispreferred)
        total += 1.0 if a > b else 0.0 if a < b else 0.5
    return total / len(pairs)


def _reply_only_classifier(pairs: Sequence[Pair], tfidf: bool) -> float:
    """Cross-validated accuracy of a bag-of-words logistic regression that sees one reply at a time.

    Trained to tell preferred from dispreferred replies without the client message, with both replies of a
    pair in the same fold (GroupKFold), so no pair is ever scored by a model that saw it. A pair counts as
    solved when the model gives its preferred reply a higher P(preferred) than its dispreferred reply.
    """
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline

    texts = [reply for pair in pairs for reply in (pair.preferred, pair.dispreferred)]
    labels = [label for _ in pairs for label in (1, 0)]
    groups = [i for i in range(len(pairs)) for _ in (0, 1)]
    proba = [0.0] * len(texts)
    for train, test in GroupKFold(n_splits=FOLDS).split(texts, labels, groups):
        vectorizer = (TfidfVectorizer if tfidf else CountVectorizer)(lowercase=True, ngram_range=(1, 2))
        model = make_pipeline(vectorizer, LogisticRegression(max_iter=1000, random_state=SEED))
        model.fit([texts[i] for i in train], [labels[i] for i in train])
        for i, p in zip(test, model.predict_proba([texts[i] for i in test])[:, 1], strict=True):
            proba[i] = float(p)
    total = 0.0
    for k in range(len(pairs)):
        a, b = proba[2 * k], proba[2 * k + 1]
        total += 1.0 if a > b else 0.0 if a < b else 0.5
    return total / len(pairs)


def shortcut_baselines(pairs: Sequence[Pair]) -> dict[str, float]:
    """Accuracy of every surface rule on `pairs`; each should sit near 0.50 for the task to be sound.

    question_mark          pick the reply containing "?": the v1 pairs rewarded asking questions (90 %).
    reverse_question_mark  pick the reply without "?": rebalancing must not just flip the shortcut.
    longer / shorter       pick the longer / shorter reply (characters): preferred replies are often fuller.
    ends_with_question     pick the reply whose last character is "?": the classic reflect-then-ask shape.
    directive              pick the reply with directive wording (you should, try, I suggest, please ...);
                           1 minus this is the naive "never tell the client what to do" rule.
    bow_logreg             reply-only word unigram+bigram counts, logistic regression, 5-fold by pair:
                           catches any vocabulary (warm phrases, judgemental words) that gives the answer away.
    tfidf_logreg           the same with TF-IDF weights.
    """
    if len(pairs) < FOLDS:
        raise ValueError(f"need at least {FOLDS} pairs, got {len(pairs)}")

    def asks(text: str) -> float:
        return float("?" in text)

    return {
        "question_mark": _pick(pairs, asks),
        "reverse_question_mark": _pick(pairs, lambda t: -asks(t)),
        "longer": _pick(pairs, lambda t: len(t)),
        "shorter": _pick(pairs, lambda t: -len(t)),
        "ends_with_question": _pick(pairs, lambda t: float(t.rstrip().endswith("?"))),
        "directive": _pick(pairs, lambda t: float(DIRECTIVE.search(t) is not None)),
        "bow_logreg": _reply_only_classifier(pairs, tfidf=False),
        "tfidf_logreg": _reply_only_classifier(pairs, tfidf=True),
    }


RULES = {
    "question_mark": 'pick the reply containing "?"',
    "reverse_question_mark": 'pick the reply without "?"',
    "longer": "pick the longer reply (characters)",
    "shorter": "pick the shorter reply",
    "ends_with_question": 'pick the reply ending with "?"',
    "directive": "pick the reply with directive wording (you should / try / I suggest / please)",
    "bow_logreg": "reply-only bag of words (unigrams+bigrams), logistic regression, 5-fold CV by pair",
    "tfidf_logreg": "the same with TF-IDF features",
}


def table(pairs: Sequence[Pair]) -> str:
    """The baselines as a Markdown table."""
    scores = shortcut_baselines(pairs)
    rows = ["| baseline | rule (sees the replies, never the client) | accuracy |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | {RULES[name]} | {value:.3f} |" for name, value in scores.items()]
    return "\n".join(rows)


def main() -> None:
    from evalkit.lm_eval_tasks.utils import load_pairs

    data = load_pairs()
    print(f"Shortcut baselines on counsel_pref_pairs.yaml v{data.version} ({len(data.pairs)} pairs; chance = 0.500)\n")
    print(table(data.pairs))


if __name__ == "__main__":
    main()
