"""Shortcut battery for evalkit_counsel_pref: how far can a model get without reading the client?

Each pair in counsel_pref_pairs.yaml has a preferred and a dispreferred counsellor reply to one client
message. If something that looks only at the two replies picks the preferred one well above chance, the task
no longer measures whether a model reads the client; it measures whether the model likes a surface style.

The battery computes FEATURES (reply-only surface measures, one number per reply, in families: length,
punctuation, shape, pronouns, lexicon, richness) and scores, by 5-fold cross-validation over pairs repeated
REPEATS times (every figure is measured on pairs its fitting never saw, then averaged over the repeats):

  rule:<feature>   pick the reply with the larger or the smaller value; the direction is chosen on the
                   training folds and scored on the held-out fold. Equal values are a tie worth 0.5.
  features_logreg  logistic regression on the difference of the two replies' feature vectors.
  char_tfidf       logistic regression on the difference of the replies' character 2-5-gram TF-IDF vectors.
  word_tfidf       the same with word 1-2-grams.

The models have no intercept, so swapping the replies flips the decision: which reply is shown first cannot
matter. The first-shown reply is drawn at random per pair, so the training labels are balanced.

Taking the best of about forty cross-validated figures is itself a selection that beats 0.50 on noise, so
the battery reruns the whole selection on SHUFFLES copies of the pairs whose preferred/dispreferred labels are
swapped at random. The highest best-figure among them is the chance ceiling: a best shortcut at or below it
is indistinguishable from luck.

    python -m evalkit.lm_eval_tasks.shortcuts     # the battery on the shipped pairs, as Markdown

numpy and scikit-learn are imported inside the functions that need them, so importing this module is cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

FOLDS = 5
REPEATS = 5     # 5-fold CV repeated over different pair splits and A/B draws; a figure is the mean
SHUFFLES = 20   # label-shuffled copies for the chance ceiling
SEED = 0
PAIRS_FILE = Path(__file__).resolve().parent / "counsel_pref_pairs.yaml"


class Pair(Protocol):
    id: str
    preferred: str
    dispreferred: str


# ---------------------------------------------------------------- reply-only features

def _words(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE)


WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+")
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
FIRST_SINGULAR = _words(r"i|me|my|mine|myself|i'm|i've|i'd|i'll")
FIRST_PLURAL = _words(r"we|us|our|ours|ourselves|we're|we've|we'll|let's")
SECOND = _words(r"you|your|yours|yourself|you're|you've|you'd|you'll")
HEDGE = _words(r"might|maybe|perhaps|possibly|probably|may|could|seems?|sounds?|wonder(?:ing)?|guess|"
               r"i think|i imagine|a bit|somewhat|kind of|sort of")
EMOTION = _words(r"feel(?:s|ing|ings)?|felt|sad(?:ness)?|angry|anger|afraid|fear|scared|frightened|anxious|anxiety|"
                 r"worr(?:y|ied|ying)|hurt(?:s|ing)?|pain(?:ful)?|lonely|alone|ashamed|shame|guilt(?:y)?|grief|"
                 r"griev(?:e|ing)|upset|overwhelm(?:ed|ing)?|exhaust(?:ed|ing)|hopeless|despair|relie(?:f|ved)|"
                 r"happy|joy|love[ds]?|loss|miss(?:ed|ing)?|frustrat(?:ed|ing|ion)|stress(?:ed|ful)?|distress(?:ed|ing)?")
VALIDATION = _words(r"makes? sense|understandabl[ey]|of course|no wonder|natural(?:ly)?|normal|valid|"
                    r"it's okay|it's ok|that's okay|that's ok|not your fault|you're not alone|brave|"
                    r"thank you for|i hear|i can see|i can hear|i understand|anyone would")
DIRECTIVE = _words(r"you should|you need to|you must|you have to|try|i suggest|i'd suggest|i would suggest|"
                   r"i recommend|please|make sure|don't|do not|call|go to|stop")
NEGATION = _words(r"not|no|never|nothing|none|nobody|cannot|[a-z]+n't")
REFLECTION = _words(r"it sounds|sounds like|sounds as if|it seems|seems like|it's as if|what i'm hearing|you're saying")
CONNECTIVE = _words(r"and|but|so|because|although|though|while|if")
LIST_MARK = re.compile(r"(?m)^\s*(?:[-*\u2022]|\d+[.)])\s|\b(?:first(?:ly)?|second(?:ly)?|third(?:ly)?|finally)\b",
                       re.IGNORECASE)


def _sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text.strip()) if s] or [""]


def _n_words(text: str) -> int:
    return len(WORD.findall(text))


def _count(pattern: re.Pattern[str]) -> Callable[[str], float]:
    return lambda text: float(len(pattern.findall(text)))


def _type_token(text: str) -> float:
    words = [w.lower() for w in WORD.findall(text)]
    return len(set(words)) / len(words) if words else 0.0


def _mean_word_length(text: str) -> float:
    words = WORD.findall(text)
    return sum(map(len, words)) / len(words) if words else 0.0


# name -> (family, what it measures on one reply)
FEATURES: dict[str, tuple[str, Callable[[str], float]]] = {
    "chars": ("length", lambda t: float(len(t))),
    "words": ("length", lambda t: float(_n_words(t))),
    "sentences": ("length", lambda t: float(len(_sentences(t)))),
    "first_sentence_chars": ("length", lambda t: float(len(_sentences(t)[0]))),
    "first_sentence_words": ("length", lambda t: float(_n_words(_sentences(t)[0]))),
    "last_sentence_chars": ("length", lambda t: float(len(_sentences(t)[-1]))),
    "last_sentence_words": ("length", lambda t: float(_n_words(_sentences(t)[-1]))),
    "mean_sentence_words": ("length", lambda t: _n_words(t) / len(_sentences(t))),
    "longest_sentence_words": ("length", lambda t: float(max(map(_n_words, _sentences(t))))),
    "shortest_sentence_words": ("length", lambda t: float(min(map(_n_words, _sentences(t))))),
    "questions": ("punctuation", lambda t: float(t.count("?"))),
    "exclamations": ("punctuation", lambda t: float(t.count("!"))),
    "commas": ("punctuation", lambda t: float(t.count(","))),
    "quotes": ("punctuation", lambda t: float(sum(t.count(q) for q in "\"\u201c\u201d\u2018\u2019") + len(re.findall(r"(?<!\w)'|'(?!\w)", t)))),
    "colons_dashes": ("punctuation", lambda t: float(sum(t.count(c) for c in ":;()\u2013\u2014") + t.count(" - "))),
    "digits": ("punctuation", lambda t: float(sum(c.isdigit() for c in t))),
    "list_markers": ("punctuation", _count(LIST_MARK)),
    "has_question": ("shape", lambda t: float("?" in t)),
    "ends_with_question": ("shape", lambda t: float(t.rstrip().endswith("?"))),
    "first_sentence_question": ("shape", lambda t: float(_sentences(t)[0].rstrip().endswith("?"))),
    "questions_before_end": ("shape", lambda t: float(t.count("?") - t.rstrip().endswith("?"))),
    "starts_with_i": ("shape", lambda t: float(re.match(r"\s*I\b", t) is not None)),
    "first_person_singular": ("pronouns", _count(FIRST_SINGULAR)),
    "first_person_plural": ("pronouns", _count(FIRST_PLURAL)),
    "second_person": ("pronouns", _count(SECOND)),
    "hedges": ("lexicon", _count(HEDGE)),
    "emotion_words": ("lexicon", _count(EMOTION)),
    "validation_phrases": ("lexicon", _count(VALIDATION)),
    "directives": ("lexicon", _count(DIRECTIVE)),
    "negations": ("lexicon", _count(NEGATION)),
    "reflection_phrases": ("lexicon", _count(REFLECTION)),
    "connectives": ("lexicon", _count(CONNECTIVE)),
    "mean_word_length": ("richness", _mean_word_length),
    "type_token_ratio": ("richness", _type_token),
    "long_word_share": ("richness", lambda t: sum(len(w) >= 7 for w in WORD.findall(t)) / max(1, _n_words(t))),
    "contractions": ("richness", lambda t: float(len(re.findall(r"[A-Za-z]'[A-Za-z]", t)))),
}


def features(text: str) -> list[float]:
    """The reply's value on every feature, in FEATURES order."""
    return [measure(text) for _, measure in FEATURES.values()]


# ---------------------------------------------------------------- the battery

MODELS = {
    "features_logreg": "logistic regression on the difference of the two replies' feature vectors (all features)",
    "char_tfidf": "logistic regression on the difference of the replies' character 2-5-gram TF-IDF vectors",
    "word_tfidf": "logistic regression on the difference of the replies' word 1-2-gram TF-IDF vectors",
}
NGRAMS = {"char_tfidf": {"analyzer": "char_wb", "ngram_range": (2, 5)},
          "word_tfidf": {"analyzer": "word", "ngram_range": (1, 2)}}


@dataclass(frozen=True)
class Shortcut:
    name: str          # "rule:<feature>" or a model name
    family: str        # the feature's family, or "model"
    accuracy: float    # cross-validated share of pairs where it picks the preferred reply (ties 0.5)
    direction: str     # rules: "larger" / "smaller", the direction most training folds chose; models: ""


@dataclass(frozen=True)
class Battery:
    n_pairs: int
    n_features: int
    shortcuts: tuple[Shortcut, ...]   # every rule and model, best first
    shuffle_best: tuple[float, ...]   # the best shortcut's figure on each label-shuffled copy

    @property
    def best(self) -> Shortcut:
        return self.shortcuts[0]

    @property
    def shuffle_max(self) -> float:
        """The chance ceiling: the highest best-figure over the label-shuffled copies."""
        return max(self.shuffle_best, default=float("nan"))

    def accuracy(self, name: str) -> float:
        return next(s.accuracy for s in self.shortcuts if s.name == name)


@dataclass(frozen=True)
class _Split:
    train: np.ndarray         # pair indices
    test: np.ndarray
    swap: np.ndarray          # per pair: the dispreferred reply is shown first
    ngrams: dict[str, Any]    # model -> sparse (preferred - dispreferred) TF-IDF rows; vocabulary and IDF from train only


def _credit(decision, swap):
    """Per pair: 1 when the decision (> 0: the first-shown reply) picks the preferred reply, 0 when not, 0.5 on a tie."""
    import numpy as np

    first = np.where(decision > 0, 1.0, np.where(decision < 0, 0.0, 0.5))
    return np.where(swap, 1.0 - first, first)


def _splits(pairs: Sequence[Pair], repeats: int, seed: int) -> list[_Split]:
    """REPEATS x FOLDS train/test splits over pairs, each with its A/B draw and its train-only TF-IDF."""
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
    from sklearn.model_selection import KFold

    n = len(pairs)
    texts = [p.preferred for p in pairs] + [p.dispreferred for p in pairs]
    counts = {name: CountVectorizer(lowercase=True, **options).fit_transform(texts).tocsr()
              for name, options in NGRAMS.items()}
    rng = np.random.default_rng(seed)
    splits = []
    for r in range(repeats):
        swap = rng.random(n) < 0.5
        for train, test in KFold(FOLDS, shuffle=True, random_state=seed + r).split(np.arange(n)):
            ngrams = {}
            for name, matrix in counts.items():  # same as TfidfVectorizer(min_df=2, sublinear_tf=True) fit on train
                rows = np.concatenate([train, train + n])
                keep = np.flatnonzero((matrix[rows] > 0).sum(axis=0).A1 >= 2)
                tfidf = TfidfTransformer(sublinear_tf=True).fit(matrix[rows][:, keep]).transform(matrix[:, keep])
                ngrams[name] = (tfidf[:n] - tfidf[n:]).tocsr()
            splits.append(_Split(train, test, swap, ngrams))
    return splits


def _run(values, splits: list[_Split], flips) -> list[Shortcut]:
    """Every shortcut's CV accuracy for one labelling; `flips` marks pairs whose preferred/dispreferred are swapped.

    values: (pairs, 2, features) array of (preferred, dispreferred) feature values.
    """
    import numpy as np
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sign = np.where(flips, -1.0, 1.0)
    diff = (values[:, 0] - values[:, 1]) * sign[:, None]          # preferred minus the other, per the labelling
    rule_credit, larger_votes = np.zeros(diff.shape[1]), np.zeros(diff.shape[1])
    model_credit = dict.fromkeys(MODELS, 0.0)
    for split in splits:
        train, test = split.train, split.test
        # single-feature rules: the direction that wins on the training pairs, scored on the held-out pairs
        direction = np.where(_credit(diff[train], False).mean(axis=0) >= 0.5, 1.0, -1.0)
        larger_votes += direction > 0
        rule_credit += _credit(diff[test] * direction, False).sum(axis=0)
        # models see the first-shown minus the second-shown reply and predict "the first one is preferred"
        shown = np.where(split.swap, -1.0, 1.0)
        scaler = StandardScaler(with_mean=False).fit(diff[train] * shown[train, None])
        inputs = {"features_logreg": scaler.transform(diff * shown[:, None])}
        inputs.update({name: sparse.diags(sign * shown) @ rows for name, rows in split.ngrams.items()})
        for name, x in inputs.items():
            model = LogisticRegression(C=1.0, fit_intercept=False, solver="liblinear")
            model.fit(x[train], ~split.swap[train])
            model_credit[name] += _credit(model.decision_function(x[test]), split.swap[test]).sum()
    total = len(values) * len(splits) / FOLDS  # every pair is scored once per repeat
    shortcuts = [Shortcut(f"rule:{name}", family, float(rule_credit[i] / total),
                          "larger" if 2 * larger_votes[i] >= len(splits) else "smaller")
                 for i, (name, (family, _)) in enumerate(FEATURES.items())]
    shortcuts += [Shortcut(name, "model", float(credit / total), "") for name, credit in model_credit.items()]
    return sorted(shortcuts, key=lambda s: -s.accuracy)


def battery(pairs: Sequence[Pair], shuffles: int = SHUFFLES, repeats: int = REPEATS, seed: int = SEED) -> Battery:
    """Every reply-only shortcut's cross-validated accuracy on `pairs`, and the chance ceiling from `shuffles` copies."""
    import numpy as np

    if len(pairs) < 2 * FOLDS:
        raise ValueError(f"need at least {2 * FOLDS} pairs, got {len(pairs)}")
    values = np.array([[features(p.preferred), features(p.dispreferred)] for p in pairs])
    splits = _splits(pairs, repeats, seed)
    found = _run(values, splits, np.zeros(len(pairs), bool))
    rng = np.random.default_rng(seed + 1)
    shuffle_best = tuple(_run(values, splits, rng.random(len(pairs)) < 0.5)[0].accuracy for _ in range(shuffles))
    return Battery(n_pairs=len(pairs), n_features=len(FEATURES), shortcuts=tuple(found), shuffle_best=shuffle_best)


# ---------------------------------------------------------------- reporting

def load_pairs(path: Path = PAIRS_FILE) -> SimpleNamespace:
    """The pairs file as plain objects (version, references, pairs), without evalkit's other modules."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return SimpleNamespace(version=data["version"], references=data["references"],
                           pairs=[SimpleNamespace(**pair) for pair in data["pairs"]])


def families() -> dict[str, list[str]]:
    """Feature names by family."""
    out: dict[str, list[str]] = {}
    for name, (family, _) in FEATURES.items():
        out.setdefault(family, []).append(name)
    return out


def table(result: Battery, top: int | None = None) -> str:
    """The battery as a Markdown table, best first (every shortcut unless `top`)."""
    rows = ["| shortcut | family | direction | CV accuracy |", "| --- | --- | --- | --- |"]
    rows += [f"| `{s.name}` | {s.family} | {s.direction or '-'} | {s.accuracy:.3f} |" for s in result.shortcuts[:top]]
    return "\n".join(rows)


def main() -> None:
    data = load_pairs()
    result = battery(data.pairs)
    print(f"Shortcut battery on counsel_pref_pairs.yaml v{data.version}: {result.n_pairs} pairs, {result.n_features} "
          f"reply-only features, {len(result.shortcuts)} shortcuts, {FOLDS}-fold CV x {REPEATS} repeats, chance 0.500\n")
    print(f"best shortcut: {result.best.name} {result.best.accuracy:.3f}; chance ceiling (highest best-figure over "
          f"{len(result.shuffle_best)} label shuffles): {result.shuffle_max:.3f}\n")
    print(table(result))


if __name__ == "__main__":
    main()
