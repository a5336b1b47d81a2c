"""Reference-based metrics, emotion accuracy and the reference-data loaders.

Every figure is checked against a direct call of the field's library made here (sacrebleu, rouge-score, nltk,
transformers' text-classification pipeline) on a small corpus written for these tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evalkit.content.references import ReferenceItem, load_reference_items
from evalkit.core.errors import ConfigError, EvalkitError
from evalkit.metrics import (
    EmotionClassifier,
    corpus_bleu,
    corpus_meteor,
    corpus_rouge,
    ensure_wordnet,
    meteor,
    meteor_tokenize,
    paired_bootstrap,
    reference_metrics,
    rouge,
    sentence_bleu,
)
from evalkit.metrics import reference as reference_module

DATA = Path(__file__).parent / "data" / "reference"

REFERENCES = [
    "That sounds exhausting. What has been keeping you awake at night?",
    "It makes sense that you feel hurt when your sister cancels plans again.",
    "You have been carrying a lot of worry about money. Where would you like to start?",
    "Losing your dog after twelve years is a big loss. Tell me about him.",
    "It sounds like the panic comes on suddenly, and that is frightening.",
    "You're proud of finishing the course, and you should be.",
    "When your boss criticised you in front of everyone, what went through your mind?",
    "Moving to a new city can feel lonely at first. Who have you met so far?",
]
HYPOTHESES = [
    "That sounds really exhausting. What keeps you awake at night?",
    "You feel hurt when your sister cancels plans.",
    "Money worries are heavy. Where do you want to start?",
    "I'm sorry about your dog. Tell me about him.",
    "Panic attacks are frightening when they come suddenly.",
    "Well done on finishing the course!",
    "What did you think when your boss criticised you?",
    "New cities can be lonely. Have you met anyone yet?",
]


def _random_system(n: int, seed: int = 1) -> list[str]:
    vocabulary = sorted({w.strip(".,?!'").lower() for r in REFERENCES for w in r.split()} | {"banana", "carburettor", "quartz"})
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(vocabulary, size=6)) for _ in range(n)]


def _need_wordnet() -> str:
    """WordNet for METEOR, or a loud skip (a failure when EVALKIT_REQUIRE_WORDNET=1, as CI should set)."""
    try:
        return ensure_wordnet()
    except EvalkitError as exc:
        message = f"WORDNET ABSENT - METEOR IS NOT TESTED: {exc}"
        if os.environ.get("EVALKIT_REQUIRE_WORDNET") == "1":
            pytest.fail(message)
        warnings.warn(message, stacklevel=2)
        pytest.skip(message)


# ---------------------------------------------------------------------------------------------------------------
# BLEU, ROUGE, METEOR against direct library calls


def test_bleu_equals_sacrebleu():
    import sacrebleu

    assert corpus_bleu(HYPOTHESES, REFERENCES) == sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score / 100
    assert 0 < corpus_bleu(HYPOTHESES, REFERENCES) < 1
    for h, r in zip(HYPOTHESES, REFERENCES, strict=True):
        assert sentence_bleu(h, r) == sacrebleu.sentence_bleu(h, [r]).score / 100
    # Corpus BLEU pools n-gram counts: it is not the mean of sentence BLEU.
    assert corpus_bleu(HYPOTHESES, REFERENCES) != pytest.approx(np.mean([sentence_bleu(h, r) for h, r in zip(HYPOTHESES, REFERENCES, strict=True)]))


def test_sacrebleu_readme_example_through_evalkit():
    # sacrebleu's README: two reference streams; BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ...)
    streams = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
               ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    system = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    per_item = [list(refs) for refs in zip(*streams, strict=True)]  # evalkit takes each item's references together
    assert round(corpus_bleu(system, per_item) * 100, 2) == 48.53


def test_rouge_equals_rouge_score_with_stemming():
    from rouge_score import rouge_scorer

    stemmed = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rows = []
    for h, r in zip(HYPOTHESES, REFERENCES, strict=True):
        direct = stemmed.score(r, h)
        ours = rouge(h, r)
        assert ours == {k: direct[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")}
        rows.append(ours)
    means = corpus_rouge(HYPOTHESES, REFERENCES)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert means[key] == pytest.approx(np.mean([row[key] for row in rows]), abs=1e-15)
    # Stemming is on: "worries"/"worry" match only with it.
    plain = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    assert rouge(HYPOTHESES[2], REFERENCES[2])["rouge1"] > plain.score(REFERENCES[2], HYPOTHESES[2])["rouge1"].fmeasure


def test_meteor_equals_nltk_offline_with_wordnet():
    source = _need_wordnet()
    from nltk.corpus import wordnet
    from nltk.translate.meteor_score import meteor_score

    assert wordnet.get_version() == "3.0", source
    direct = [meteor_score([meteor_tokenize(r)], meteor_tokenize(h)) for h, r in zip(HYPOTHESES, REFERENCES, strict=True)]
    assert [meteor(h, r) for h, r in zip(HYPOTHESES, REFERENCES, strict=True)] == direct
    assert corpus_meteor(HYPOTHESES, REFERENCES) == pytest.approx(np.mean(direct), abs=1e-15)
    # WordNet synonymy is in play ("talk" ~ "speak"): without synonyms the same pair scores lower. (nltk looks
    # synonyms up for the Porter stems left after stem matching, so "big" ~ "large" -> "larg" would not match.)

    class NoSynonyms:
        @staticmethod
        def synsets(word):
            return []

    hyp, ref = "Can we talk about what happened?", "Can we speak about what happened?"
    assert meteor(hyp, ref) > meteor_score([meteor_tokenize(ref)], meteor_tokenize(hyp), wordnet=NoSynonyms())


def test_meteor_tokenizer_needs_no_download():
    assert meteor_tokenize("I'm sad. It costs $3.50, doesn't it?") == [
        "I", "'m", "sad", ".", "It", "costs", "$", "3.50", ",", "does", "n't", "it", "?"]


def test_reference_metrics_matches_the_parts():
    _need_wordnet()
    import sacrebleu

    ids = [f"item-{i}" for i in range(len(HYPOTHESES))]
    result = reference_metrics(HYPOTHESES, REFERENCES, ids=ids)
    assert result.n == 8 and [row.id for row in result.items] == ids
    assert result.bleu == sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score / 100
    means = corpus_rouge(HYPOTHESES, REFERENCES)
    assert (result.rouge1, result.rouge2, result.rougeL) == pytest.approx((means["rouge1"], means["rouge2"], means["rougeL"]))
    assert result.meteor == pytest.approx(corpus_meteor(HYPOTHESES, REFERENCES))
    assert result.items[3].bleu == sentence_bleu(HYPOTHESES[3], REFERENCES[3])
    assert "tok:13a" in result.settings["bleu"] and "use_stemmer=True" in result.settings["rouge"]
    with pytest.raises(ConfigError, match="7 hypotheses but 8 references"):
        reference_metrics(HYPOTHESES[:7], REFERENCES)


def test_missing_wordnet_is_one_line(tmp_path, monkeypatch):
    import nltk

    with pytest.raises(EvalkitError) as info:
        reference_module.prepare_wordnet(tmp_path / "no-wordnet", tmp_path / "cache")
    assert "\n" not in str(info.value) and "wordnet-base" in str(info.value)

    def not_found(*args, **kwargs):
        raise LookupError("no")

    monkeypatch.setattr(reference_module, "_wordnet_source", None)
    monkeypatch.setattr(reference_module, "wordnet_search_dirs", lambda: [tmp_path / "nowhere"])
    monkeypatch.setattr(nltk.data, "find", not_found)
    with pytest.raises(EvalkitError) as info:
        ensure_wordnet()
    assert "\n" not in str(info.value)
    assert "apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index" in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# paired bootstrap


def test_paired_bootstrap_identical_systems():
    for metric in ("bleu", "rougeL"):
        result = paired_bootstrap(HYPOTHESES, list(HYPOTHESES), REFERENCES, metric=metric, rounds=300)
        assert result.difference == 0 and result.p_value == 1.0
        assert result.ci_low == result.ci_high == 0


def test_paired_bootstrap_references_beat_random():
    random_system = _random_system(len(REFERENCES))
    for metric in ("bleu", "rouge1", "rougeL"):
        result = paired_bootstrap(REFERENCES, random_system, REFERENCES, metric=metric, rounds=500, seed=3)
        assert result.difference > 0 and result.ci_low > 0, result
        assert result.p_value < 0.05, result
        reverse = paired_bootstrap(random_system, REFERENCES, REFERENCES, metric=metric, rounds=500, seed=3)
        assert reverse.difference == pytest.approx(-result.difference) and reverse.p_value < 0.05


def test_paired_bootstrap_meteor():
    _need_wordnet()
    result = paired_bootstrap(REFERENCES, _random_system(len(REFERENCES)), REFERENCES, metric="meteor", rounds=200)
    assert result.difference > 0 and result.p_value < 0.05


def test_bleu_bootstrap_reproduces_sacrebleu_paired_test(monkeypatch):
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    baseline = HYPOTHESES[:4] + _random_system(4, seed=7)
    test = PairedTest([("baseline", baseline), ("system", HYPOTHESES)], {"BLEU": BLEU()}, references=[REFERENCES],
                      test_type="bs", n_samples=1000)
    _, scores = test()
    ours = paired_bootstrap(HYPOTHESES, baseline, REFERENCES, metric="bleu", rounds=1000, seed=12345)
    assert ours.score_a * 100 == pytest.approx(scores["BLEU"][1].score)
    assert ours.score_b * 100 == pytest.approx(scores["BLEU"][0].score)
    assert ours.sacrebleu_p_value == scores["BLEU"][1].p_value
    assert 0.001 < ours.sacrebleu_p_value < 1  # a non-degenerate comparison


# ---------------------------------------------------------------------------------------------------------------
# emotion accuracy


MODEL_LABELS = {0: "joy", 1: "sadness", 2: "fear"}
LABEL_MAP = {"joy": "joyful", "sadness": "sad", "fear": "afraid"}


def _tiny_emotion_model(out: Path) -> Path:
    """A 2-layer, hidden-32 random BERT classifier with a WordPiece tokenizer trained here (no hub download)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(REFERENCES + HYPOTHESES, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials,
                                                                                     show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128, id2label=MODEL_LABELS, label2id={v: k for k, v in MODEL_LABELS.items()},
                        pad_token_id=fast.pad_token_id, initializer_range=0.5)
    BertForSequenceClassification(config).save_pretrained(out)
    return out


@pytest.mark.model
def test_emotion_accuracy_equals_transformers_pipeline(tmp_path):
    from transformers import pipeline

    model = _tiny_emotion_model(tmp_path / "emotion-model")
    replies = REFERENCES + HYPOTHESES
    gold = ["sad", "sad", "afraid", "sad", "afraid", "joyful", "angry", "sad"] * 2
    gold[5] = None  # an item without an annotated emotion is skipped

    classify = pipeline("text-classification", model=str(model), tokenizer=str(model), device="cpu")
    direct = [LABEL_MAP[out["label"]] for out in classify(replies)]
    assert len(set(direct)) >= 2, "the random model should not predict one label for everything"

    classifier = EmotionClassifier(model, label_map=LABEL_MAP, batch_size=3)  # batches of 3 exercise padding
    assert classifier.predict(replies) == direct
    result = classifier.accuracy(replies, gold)
    scored = [(p, g) for p, g in zip(direct, gold, strict=True) if g is not None]
    assert result.n == len(scored) == 15 and result.skipped == 1
    assert result.correct == sum(p == g for p, g in scored)
    assert result.accuracy == pytest.approx(result.correct / 15)
    assert result.label_mapping == LABEL_MAP
    assert result.unreachable_gold_labels == ["angry"]
    gold_counts, predicted_counts = Counter(g for _, g in scored), Counter(p for p, _ in scored)
    for label, counts in result.per_label.items():
        assert (counts.gold, counts.predicted) == (gold_counts[label], predicted_counts[label])
        assert counts.correct == sum(p == g == label for p, g in scored)

    with pytest.raises(ConfigError, match="label_map names 'anger'"):
        EmotionClassifier(model, label_map={"anger": "angry"})


def test_importing_metrics_does_not_load_torch():
    code = ("import sys, evalkit.metrics, evalkit.content.references; "
            "print(sorted(m for m in ('torch', 'transformers', 'nltk', 'sacrebleu', 'rouge_score') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------
# loaders


def test_empathetic_dialogues_csv():
    items = load_reference_items(DATA / "empathetic_dialogues_sample.csv")
    assert items == [
        ReferenceItem(id="hit:1_conv:2/2", emotion="lonely",
                      context=[{"role": "client", "content": "I moved here last month, and honestly the evenings are the worst."}],
                      reply="That sounds isolating. Have you found any way to meet people yet?"),
        ReferenceItem(id="hit:1_conv:2/4", emotion="lonely",
                      context=[{"role": "client", "content": "I moved here last month, and honestly the evenings are the worst."},
                               {"role": "therapist", "content": "That sounds isolating. Have you found any way to meet people yet?"},
                               {"role": "client", "content": '"Not yet" is the honest answer. I keep meaning to, but I freeze.'}],
                      reply="Freezing up makes sense when everything is new. What happens right before you freeze?"),
        ReferenceItem(id="hit:3_conv:7/2", emotion="proud",
                      context=[{"role": "client", "content": "My daughter ran her first marathon on Sunday!"}],
                      reply="That's wonderful, you must be so proud of her!"),
    ]


def test_generic_jsonl_and_csv():
    jsonl = load_reference_items(DATA / "generic.jsonl")
    assert [i.id for i in jsonl] == ["j1", "j2", "3"]
    assert [i.emotion for i in jsonl] == ["afraid", "angry", None]
    assert jsonl[1].reply == "It sounds like you have little say over your workload."  # from `response`
    assert [t.role for t in jsonl[2].context] == ["client", "therapist", "client"]  # plain strings end with the client
    csv_items = load_reference_items(DATA / "generic.csv")
    assert [(i.id, i.emotion) for i in csv_items] == [("c1", "sad"), ("row-2", "joyful")]
    assert csv_items[0].context[0].content == "I failed my exam, again."
    assert csv_items[0].reply == 'That is disappointing, and "again" sounds heavy.'


def _one_line_config_error(path: Path, *fragments: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_reference_items(path)
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in (str(path), *fragments):
        assert fragment in message, message


@pytest.mark.parametrize(("old", "new", "fragments"), [
    ("hit:1_conv:2,3,lonely", "hit:1_conv:2,three,lonely", ("row 2 (line 3)", "column 'utterance_idx'", "not an integer")),
    ("hit:3_conv:7,3,proud", "hit:3_conv:7,2,proud", ("row 7 (line 8)", "column 'utterance_idx'", "already given in row 6")),
    ("hit:3_conv:7,3,proud", "hit:3_conv:7,3,joyful", ("row 7 (line 8)", "column 'context'", "differs")),
    ("I cried at the finish line.", "I cried, at the, finish line.", ("row 7 (line 8)", "10 comma-separated fields")),
    (",12,That sounds isolating. Have you found any way to meet people yet?,", ",12,,", ("row 3 (line 4)", "column 'utterance'", "empty")),
])
def test_malformed_empathetic_dialogues_rows(tmp_path, old, new, fragments):
    text = (DATA / "empathetic_dialogues_sample.csv").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "ed.csv"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    _one_line_config_error(path, *fragments)


@pytest.mark.parametrize(("name", "content", "fragments"), [
    ("bad.jsonl", '{"context": "hi", "reply": "hello"}\n{"context": [{"role": "therapist", "content": "x"}], "reply": "y"}\n',
     ("row 2", "column 'context'", "last context turn must be the client's")),
    ("bad.jsonl", '{"context": "hi", "reply": "hello"}\n{"context": "hi", "answer": "y"}\n', ("row 2", "column 'reply' is missing")),
    ("bad.jsonl", '{"context": "hi", "reply": "hello"}\n{"context": "hi", "reply": \n', ("row 2", "not valid JSON")),
    ("bad.jsonl", '{"context": "hi", "reply": "a", "response": "b"}\n', ("'reply' and 'response'",)),
    ("bad.csv", "context,response\nhello,fine\nhi,   \n", ("row 2 (line 3)", "column 'response'")),
    ("bad.csv", "context,reply,emotion\nhello,fine,sad\nhi,there\n", ("row 2 (line 3)", "column 'emotion'", "2 fields")),
    ("dup.csv", "id,context,reply\na,hello,fine\na,hi,there\n", ("item id 'a' appears twice",)),
    ("bad.tsv", "context\treply\n", ("unknown format '.tsv'",)),
    ("ed.csv", "conv_id,utterance_idx,prompt,speaker_idx,utterance\nc1,1,x,1,hi\n", ("column 'context' is missing",)),
])
def test_malformed_generic_rows(tmp_path, name, content, fragments):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    _one_line_config_error(path, *fragments)


def test_non_utf8_file_is_one_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("context,reply\nhello,fine\ncaf\u00e9 talk,ok\n".encode("latin-1"))
    _one_line_config_error(path, "not UTF-8", "byte 0xe9 at line 3")
