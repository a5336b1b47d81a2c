"""Reference-based metrics against reference therapist replies: BLEU, ROUGE-1/2/L, METEOR, paired bootstrap.

Each figure comes from the field's library, configured as below and recorded in `ReferenceMetrics.settings`:

- BLEU: sacrebleu (Post, 2018), corpus BLEU over all items, default settings: its "13a" tokenizer (the WMT
  mteval-v13a rules), case-sensitive, exponential smoothing, n-grams up to 4. Reported on the 0-1 scale
  (sacrebleu's score / 100), as counselling papers report it. Per-item BLEU is sacrebleu's sentence BLEU (same
  tokenizer, exponential smoothing, effective order on), also / 100. Corpus BLEU is not the mean of sentence BLEU.
- ROUGE: Google's rouge-score, F-measure of rouge1, rouge2 and rougeL (sentence-level LCS; not rougeLsum), with
  its Porter stemmer on (`use_stemmer=True`, as most papers and Hugging Face `evaluate` do) and its default
  tokenizer (lower-cases, keeps [a-z0-9] runs: non-ASCII letters are dropped). Corpus figure = mean over items.
- METEOR: nltk's `meteor_score` (alpha 0.9, beta 3, gamma 0.5; lower-cased; exact, Porter-stem and WordNet-synonym
  matching), one reference per item, corpus figure = mean over items (as Hugging Face `evaluate` reports it).
  Texts are tokenised by `meteor_tokenize`: nltk's `word_tokenize` pipeline with an untrained Punkt sentence
  splitter (punkt's trained English model cannot be downloaded here), i.e. Punkt sentence splitting then nltk's
  Treebank word tokenizer. It differs from `word_tokenize` only where the trained model knows an abbreviation
  ("Dr.", "e.g."): there the period becomes its own token. WordNet comes from `ensure_wordnet()`. As in every
  nltk release, the WordNet stage looks up synonyms of the Porter stems left after stem matching ("talk" ~
  "speak" match, "big" ~ "large" does not: "large" is stemmed to "larg").

`paired_bootstrap` compares two systems on the same items by resampling items with replacement (Koehn, 2004):
each round recomputes the metric on the resampled items for both systems (for BLEU, corpus BLEU from sacrebleu's
per-item sufficient statistics, exactly as sacrebleu's own paired test does). It reports the difference A - B on
all items, the percentile confidence interval of the resampled differences, and a two-sided p-value
p = min(1, 2 * (min(#{d* <= 0}, #{d* >= 0}) + 1) / (rounds + 1)): identical systems give p = 1. For BLEU it
also reports `sacrebleu_p_value`, the p-value of sacrebleu's `--paired-bs` test (Moses'
bootstrap-hypothesis-difference-significance.pl) computed on the same resamples; with the same seed it equals
`sacrebleu.significance.PairedTest(..., test_type="bs")`. That test is not the primary p-value because it counts
resampled |differences| strictly greater than the observed one after centring, so two identical systems get
p = 1/(rounds+1) instead of 1, and sacrebleu's API takes its seed only from the SACREBLEU_SEED environment
variable (and treats seed 0 as unseeded).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evalkit.core.errors import ConfigError, EvalkitError

BLEU_TOKENIZE = "13a"
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA = 0.9, 3.0, 0.5
METEOR_TOKENIZER = "nltk Treebank word tokenizer after untrained Punkt sentence splitting (word_tokenize without punkt data)"
Metric = Literal["bleu", "rouge1", "rouge2", "rougeL", "meteor"]

# ---------------------------------------------------------------------------------------------------------------
# WordNet, offline

WORDNET_INSTALL_HINT = ("install Debian's WordNet 3.0: apt-get install -y --no-install-recommends wordnet-base "
                        "wordnet-sense-index (or put nltk's 'wordnet' corpus in an nltk_data directory, "
                        "or set EVALKIT_WORDNET_DIR to a WordNet 3.0 dict/ directory)")
# The files nltk's WordNetCorpusReader opens, apart from lexnames (written below). Debian's wordnet-base has all
# but index.sense, which is in wordnet-sense-index; nltk reads it when the reader is built.
WORDNET_FILES = ("data.adj", "data.adv", "data.noun", "data.verb", "index.adj", "index.adv", "index.noun",
                 "index.verb", "adj.exc", "adv.exc", "noun.exc", "verb.exc", "cntlist.rev", "index.sense")
# WordNet 3.0's lexicographer files (lexnames(5WN)): number, name, syntactic category (1 noun, 2 verb, 3 adj, 4 adv).
# Debian does not ship the lexnames file (its C library has the list compiled in), so it is written from this list.
_LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
             "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
             "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
             "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
             "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
             "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
             "adj.ppl").split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_PREPARED_MARKER = "evalkit-wordnet.json"
_wordnet_source: str | None = None


def _lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES))


def wordnet_search_dirs() -> list[Path]:
    """Where a WordNet 3.0 dict/ directory is looked for: $EVALKIT_WORDNET_DIR, $WNSEARCHDIR, then the usual places."""
    dirs = [os.environ.get("EVALKIT_WORDNET_DIR"), os.environ.get("WNSEARCHDIR"), "/usr/share/wordnet",
            "/usr/local/share/wordnet", "/usr/local/WordNet-3.0/dict", "/opt/homebrew/share/wordnet"]
    return [Path(d) for d in dirs if d]


def _wordnet_cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "evalkit" / "nltk_data"


def _source_fingerprint(source: Path) -> dict[str, list[int]]:
    return {name: [(source / name).stat().st_size, int((source / name).stat().st_mtime)] for name in WORDNET_FILES}


def prepare_wordnet(source: Path, nltk_data: Path) -> Path:
    """Lay out a WordNet dict/ directory as nltk's corpus `nltk_data/corpora/wordnet`, by copy, and return `nltk_data`.

    Copies rather than links: nltk (3.9.3+) refuses files reached through a symlink or hard link out of its
    data directory, and files another account could write (so the copies are made mode 0644)."""
    missing = [name for name in WORDNET_FILES if not (source / name).is_file()]
    if missing:
        raise EvalkitError(f"WordNet in {source} lacks {', '.join(missing)}: {WORDNET_INSTALL_HINT}")
    target = nltk_data / "corpora" / "wordnet"
    fingerprint = {"source": str(source), "files": _source_fingerprint(source)}
    marker = target / _PREPARED_MARKER
    try:
        if marker.is_file() and json.loads(marker.read_text()) == fingerprint:
            return nltk_data
    except (OSError, ValueError):
        pass
    try:
        (nltk_data / "corpora").mkdir(parents=True, exist_ok=True)
        for directory in (nltk_data, nltk_data / "corpora"):  # nltk ignores data roots others could write to
            directory.chmod(0o755)
        staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=nltk_data / "corpora"))
        for name in WORDNET_FILES:
            shutil.copyfile(source / name, staging / name)
        (staging / "lexnames").write_text(_lexnames_text(), encoding="utf-8")
        (staging / _PREPARED_MARKER).write_text(json.dumps(fingerprint))
        for path in staging.iterdir():
            path.chmod(0o644)
        staging.chmod(0o755)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:  # another process finished first; its copy is as good
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise EvalkitError(f"cannot prepare WordNet for nltk in {nltk_data} ({exc.strerror or exc}); "
                           "set XDG_CACHE_HOME to a writable directory") from None
    return nltk_data


def ensure_wordnet() -> str:
    """Make WordNet readable by nltk offline; return where it comes from. Idempotent and cheap after the first call.

    Order: an nltk 'wordnet' corpus already on nltk.data.path (used as is); else the first WordNet 3.0 dict/
    directory in `wordnet_search_dirs()` (Debian's /usr/share/wordnet), copied once into
    $XDG_CACHE_HOME/evalkit/nltk_data (default ~/.cache) with the lexnames file nltk needs, and that directory
    appended to nltk.data.path. Raises EvalkitError (one line: what to install) when there is none."""
    global _wordnet_source
    if _wordnet_source is not None:
        return _wordnet_source
    import nltk

    try:
        found = nltk.data.find("corpora/wordnet")
        _wordnet_source = f"nltk data ({found})"
        return _wordnet_source
    except LookupError:
        pass
    for source in wordnet_search_dirs():
        if (source / "data.noun").is_file():
            nltk_data = prepare_wordnet(source, _wordnet_cache_dir())
            if str(nltk_data) not in nltk.data.path:
                nltk.data.path.append(str(nltk_data))
            try:
                from nltk.corpus import wordnet

                wordnet.ensure_loaded()
            except (LookupError, OSError) as exc:
                reason = next((line.strip() for line in str(exc).splitlines() if "Refused" in line or "refus" in line),
                              type(exc).__name__)
                raise EvalkitError(f"nltk cannot read the WordNet prepared in {nltk_data} ({reason}); "
                                   "make that directory private to its owner (chmod -R go-w) or set XDG_CACHE_HOME") from None
            _wordnet_source = f"{source} (WordNet dict files, prepared in {nltk_data})"
            return _wordnet_source
    raise EvalkitError(f"METEOR needs WordNet and none was found: {WORDNET_INSTALL_HINT}")


# ---------------------------------------------------------------------------------------------------------------
# the metrics


def _check_lengths(hypotheses: Sequence[str], references: Sequence) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise ConfigError("hypotheses and references must be lists of strings, not one string")
    if len(hypotheses) != len(references):
        raise ConfigError(f"{len(hypotheses)} hypotheses but {len(references)} references; they must pair up one to one")
    if not hypotheses:
        raise ConfigError("no hypotheses to score")


def _reference_streams(references: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Item-major references (one string, or a list of strings, per item) -> sacrebleu's reference streams."""
    per_item = [[r] if isinstance(r, str) else list(r) for r in references]
    width = max(len(refs) for refs in per_item)
    return [[refs[k] if k < len(refs) else None for refs in per_item] for k in range(width)]


@lru_cache(maxsize=8)
def _bleu(tokenize: str, lowercase: bool, effective_order: bool):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize, lowercase=lowercase, effective_order=effective_order)


def _corpus_bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], tokenize: str,
                 lowercase: bool) -> tuple[float, str]:
    from sacrebleu.metrics import BLEU

    _check_lengths(hypotheses, references)
    bleu = BLEU(tokenize=tokenize, lowercase=lowercase)
    score = bleu.corpus_score(list(hypotheses), _reference_streams(references)).score / 100
    return score, bleu.get_signature().format()


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], *,
                tokenize: str = BLEU_TOKENIZE, lowercase: bool = False) -> float:
    """sacrebleu corpus BLEU / 100. `references[i]` is item i's reference, or a list of its references."""
    return _corpus_bleu(hypotheses, references, tokenize, lowercase)[0]


def sentence_bleu(hypothesis: str, references: str | Sequence[str], *, tokenize: str = BLEU_TOKENIZE,
                  lowercase: bool = False) -> float:
    """sacrebleu sentence BLEU / 100 (exponential smoothing, effective order)."""
    refs = [references] if isinstance(references, str) else list(references)
    return _bleu(tokenize, lowercase, True).sentence_score(hypothesis, refs).score / 100


def _bleu_statistics(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], tokenize: str,
                     lowercase: bool) -> np.ndarray:
    """Per-item sufficient statistics [hyp_len, ref_len, correct_1..4, total_1..4], through sacrebleu's public API
    (sentence scores; effective order changes the sentence score, not these counts)."""
    bleu = _bleu(tokenize, lowercase, True)
    rows = []
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        score = bleu.sentence_score(hypothesis, [refs] if isinstance(refs, str) else list(refs))
        rows.append([score.sys_len, score.ref_len, *score.counts, *score.totals])
    return np.asarray(rows, dtype=np.int64)


def _bleu_from_statistics(stats: np.ndarray) -> float:
    """sacrebleu's corpus BLEU (0-100) from summed statistics, as its `_compute_score_from_stats` does."""
    from sacrebleu.metrics import BLEU

    order = (stats.shape[-1] - 2) // 2
    return BLEU.compute_bleu(correct=stats[2:2 + order], total=stats[2 + order:], sys_len=int(stats[0]),
                             ref_len=int(stats[1]), smooth_method="exp", max_ngram_order=order).score


@lru_cache(maxsize=2)
def _rouge_scorer(use_stemmer: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)


def rouge(hypothesis: str, reference: str, *, use_stemmer: bool = True) -> dict[str, float]:
    """rouge-score F-measures {rouge1, rouge2, rougeL} of one reply against its reference."""
    scores = _rouge_scorer(use_stemmer).score(reference, hypothesis)  # rouge-score takes (target, prediction)
    return {name: float(scores[name].fmeasure) for name in ROUGE_TYPES}


def corpus_rouge(hypotheses: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True) -> dict[str, float]:
    """Mean over items of each ROUGE F-measure."""
    _check_lengths(hypotheses, references)
    rows = [rouge(h, r, use_stemmer=use_stemmer) for h, r in zip(hypotheses, references, strict=True)]
    return {name: float(np.mean([row[name] for row in rows])) for name in ROUGE_TYPES}


@lru_cache(maxsize=1)
def _word_tokenizers():
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def meteor_tokenize(text: str) -> list[str]:
    """nltk's word_tokenize without downloaded data: untrained Punkt sentence splitting, then the Treebank word tokenizer."""
    sentences, words = _word_tokenizers()
    return [token for sentence in sentences.tokenize(text) for token in words.tokenize(sentence)]


def meteor(hypothesis: str, reference: str) -> float:
    """nltk METEOR of one reply against its reference (WordNet via `ensure_wordnet`)."""
    ensure_wordnet()
    from nltk.translate.meteor_score import meteor_score

    return float(meteor_score([meteor_tokenize(reference)], meteor_tokenize(hypothesis),
                              alpha=METEOR_ALPHA, beta=METEOR_BETA, gamma=METEOR_GAMMA))


def corpus_meteor(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean METEOR over items."""
    _check_lengths(hypotheses, references)
    return float(np.mean([meteor(h, r) for h, r in zip(hypotheses, references, strict=True)]))


# ---------------------------------------------------------------------------------------------------------------
# everything at once


class ItemScores(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    id: str | None = None
    bleu: float = Field(description="sentence BLEU / 100")
    rouge1: float
    rouge2: float
    rougeL: float
    meteor: float | None = None


class ReferenceMetrics(BaseModel):
    """Corpus figures (0-1 scale) and per-item rows, with the settings that produced them."""

    model_config = ConfigDict(extra="forbid")

    n: int
    bleu: float = Field(description="sacrebleu corpus BLEU / 100")
    rouge1: float = Field(description="mean rouge-score F-measure")
    rouge2: float
    rougeL: float
    meteor: float | None = Field(None, description="mean nltk METEOR; None when not computed")
    items: list[ItemScores]
    settings: dict[str, str]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("sacrebleu", "rouge-score", "nltk"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


def reference_metrics(hypotheses: Sequence[str], references: Sequence[str], ids: Sequence[str] | None = None, *,
                      with_meteor: bool = True, use_stemmer: bool = True, tokenize: str = BLEU_TOKENIZE,
                      lowercase: bool = False) -> ReferenceMetrics:
    """BLEU, ROUGE-1/2/L and METEOR of `hypotheses` against one reference each, per item and for the corpus."""
    _check_lengths(hypotheses, references)
    if ids is not None and len(ids) != len(hypotheses):
        raise ConfigError(f"{len(ids)} ids for {len(hypotheses)} hypotheses")
    if not all(isinstance(r, str) for r in references):
        raise ConfigError("reference_metrics takes one reference string per item")
    rows = []
    for index, (hypothesis, reference) in enumerate(zip(hypotheses, references, strict=True)):
        rows.append(ItemScores(index=index, id=None if ids is None else str(ids[index]),
                               bleu=sentence_bleu(hypothesis, reference, tokenize=tokenize, lowercase=lowercase),
                               **rouge(hypothesis, reference, use_stemmer=use_stemmer),
                               meteor=meteor(hypothesis, reference) if with_meteor else None))
    versions = _versions()
    bleu, signature = _corpus_bleu(hypotheses, references, tokenize, lowercase)
    settings = {
        "bleu": f"sacrebleu corpus BLEU / 100, signature {signature}; "
                "per item: sentence BLEU (exp smoothing, effective order) / 100",
        "rouge": f"rouge-score {versions['rouge-score']}, F-measure, use_stemmer={use_stemmer}, rougeL = sentence-level LCS; "
                 "corpus = mean over items",
        "meteor": (f"nltk {versions['nltk']} meteor_score(alpha={METEOR_ALPHA}, beta={METEOR_BETA}, gamma={METEOR_GAMMA}), "
                   f"tokens: {METEOR_TOKENIZER}; WordNet: {ensure_wordnet()}; corpus = mean over items")
        if with_meteor else "not computed",
    }
    return ReferenceMetrics(
        n=len(rows),
        bleu=bleu,
        rouge1=float(np.mean([r.rouge1 for r in rows])),
        rouge2=float(np.mean([r.rouge2 for r in rows])),
        rougeL=float(np.mean([r.rougeL for r in rows])),
        meteor=float(np.mean([r.meteor for r in rows])) if with_meteor else None,
        items=rows,
        settings=settings,
    )


# ---------------------------------------------------------------------------------------------------------------
# paired bootstrap


class PairedBootstrap(BaseModel):
    """System A minus system B on the same items, with a bootstrap CI and p-value (0-1 metric scale)."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    n: int
    score_a: float
    score_b: float
    difference: float = Field(description="score_a - score_b on all items")
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float = Field(description="two-sided percentile-bootstrap p-value for difference = 0")
    sacrebleu_p_value: float | None = Field(None, description="BLEU only: sacrebleu --paired-bs (Moses) p-value, same resamples")
    rounds: int
    seed: int
    method: str


def paired_bootstrap(hyps_a: Sequence[str], hyps_b: Sequence[str], refs: Sequence[str], metric: Metric = "bleu",
                     rounds: int = 1000, seed: int = 0, confidence: float = 0.95, *, use_stemmer: bool = True,
                     tokenize: str = BLEU_TOKENIZE, lowercase: bool = False) -> PairedBootstrap:
    """Paired bootstrap over items of `metric` for system A vs system B (see the module doc for the method)."""
    _check_lengths(hyps_a, refs)
    _check_lengths(hyps_b, refs)
    if metric not in ("bleu", *ROUGE_TYPES, "meteor"):
        raise ConfigError(f"unknown metric '{metric}' (expected bleu, rouge1, rouge2, rougeL or meteor)")
    if rounds < 1 or not 0 < confidence < 1:
        raise ConfigError("rounds must be at least 1 and confidence between 0 and 1")
    n = len(refs)
    rng = np.random.default_rng(seed)
    # The same draw as sacrebleu's paired bootstrap, so its p-value can be reproduced for a given seed.
    idxs = rng.choice(n, size=(rounds, n), replace=True)
    sacrebleu_p = None
    if metric == "bleu":
        stats_a = _bleu_statistics(hyps_a, refs, tokenize, lowercase)
        stats_b = _bleu_statistics(hyps_b, refs, tokenize, lowercase)
        raw_a, raw_b = _bleu_from_statistics(stats_a.sum(0)), _bleu_from_statistics(stats_b.sum(0))
        # Resampled sums in float32, as sacrebleu's paired test makes them (its p-value is reproduced exactly).
        f32_a, f32_b = stats_a.astype(np.float32), stats_b.astype(np.float32)
        raw_boot_a = np.array([_bleu_from_statistics(f32_a[row].sum(0)) for row in idxs])
        raw_boot_b = np.array([_bleu_from_statistics(f32_b[row].sum(0)) for row in idxs])
        # sacrebleu/Moses: centred |resampled difference| against the observed |difference| (0-100 scale).
        sample = np.abs(raw_boot_a - raw_boot_b)
        sacrebleu_p = float((np.sum(sample - sample.mean() > abs(raw_a - raw_b)) + 1) / (rounds + 1))
        score_a, score_b = raw_a / 100, raw_b / 100
        boot_a, boot_b = raw_boot_a / 100, raw_boot_b / 100
        method = "paired bootstrap over items; corpus BLEU recomputed per resample from sacrebleu sufficient statistics"
    else:
        if metric == "meteor":
            per_a = np.array([meteor(h, r) for h, r in zip(hyps_a, refs, strict=True)])
            per_b = np.array([meteor(h, r) for h, r in zip(hyps_b, refs, strict=True)])
        else:
            per_a = np.array([rouge(h, r, use_stemmer=use_stemmer)[metric] for h, r in zip(hyps_a, refs, strict=True)])
            per_b = np.array([rouge(h, r, use_stemmer=use_stemmer)[metric] for h, r in zip(hyps_b, refs, strict=True)])
        score_a, score_b = float(per_a.mean()), float(per_b.mean())
        boot_a, boot_b = per_a[idxs].mean(1), per_b[idxs].mean(1)
        method = f"paired bootstrap over items of the mean per-item {metric}"
    deltas = boot_a - boot_b
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    extreme = min(int(np.sum(deltas <= 0)), int(np.sum(deltas >= 0)))
    p_value = min(1.0, 2 * (extreme + 1) / (rounds + 1))
    return PairedBootstrap(metric=metric, n=n, score_a=score_a, score_b=score_b, difference=score_a - score_b,
                           ci_low=float(low), ci_high=float(high), confidence=confidence, p_value=p_value,
                           sacrebleu_p_value=sacrebleu_p, rounds=rounds, seed=seed,
                           method=method + f"; {rounds} rounds, seed {seed}, percentile CI, two-sided p")
