"""The reference suite end to end: each dialogue's reply is compared with the reference reply; the corpus figures in
summary.json equal direct library calls on the same replies; emotion accuracy equals a direct transformers pipeline;
compare gives paired-bootstrap contrasts between runs."""

import json

import pytest

from evalkit.backends.mock import MockBackend
from evalkit.content.suites import load_suite

from .conftest import read_jsonl, run_cli
from .test_reference_metrics import LABEL_MAP, _tiny_emotion_model


def _replies(run):
    return {t["source_id"]: t["turns"][-1]["content"] for t in read_jsonl(run / "transcripts.jsonl")}


@pytest.mark.model
def test_reference_run_matches_the_libraries_and_the_classifier(tmp_path):
    import sacrebleu
    from rouge_score import rouge_scorer
    from transformers import pipeline

    import evalkit

    items = {i.id: i for i in load_suite("reference").references}
    emotion_model = _tiny_emotion_model(tmp_path / "emotion")
    labels = {"joyful": "hopeful", "sad": "sad", "afraid": "afraid"}  # the classifier's mapped labels -> this corpus
    mapping = {model_label: labels[mapped] for model_label, mapped in LABEL_MAP.items()}
    therapist = MockBackend(model="echo", replies=lambda m: "I hear how " + m[-1]["content"].split(".")[0].lower() + ".")
    result = evalkit.run(therapist, "reference", out=tmp_path / "run", emotion_model=tmp_path / "emotion", emotion_labels=mapping)
    replies = _replies(result.directory)
    ids = sorted(replies)
    hyps, refs = [replies[i] for i in ids], [items[i].reply for i in ids]
    summary = result.summary.reference
    assert summary.n == 40 and summary.bleu == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score / 100, abs=1e-12)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    direct = [scorer.score(r, h) for h, r in zip(hyps, refs, strict=True)]
    assert summary.rougeL == pytest.approx(sum(d["rougeL"].fmeasure for d in direct) / 40, abs=1e-12)
    assert summary.rouge1 == pytest.approx(sum(d["rouge1"].fmeasure for d in direct) / 40, abs=1e-12)
    classify = pipeline("text-classification", model=str(emotion_model), tokenizer=str(emotion_model), device="cpu")
    predicted = [mapping[out["label"]] for out in classify(hyps)]
    assert summary.emotion_accuracy == pytest.approx(sum(p == items[i].emotion for p, i in zip(predicted, ids, strict=True)) / 40)
    assert summary.label_map == mapping and result.manifest.config.emotion_labels == mapping
    # Per-item rows, and the per-item means in the rubric summary.
    rows = [r for r in read_jsonl(result.directory / "scores.jsonl") if r["rubric"] == "reference"]
    assert {r["item"] for r in rows} == {"bleu", "rouge1", "rouge2", "rouge_l", "meteor", "emotion"} and len(rows) == 240
    assert result.summary.rubrics["reference"].items["rouge_l"].mean == pytest.approx(summary.rougeL, abs=1e-12)
    assert not result.manifest.self_judged and not result.manifest.warnings  # nobody judges a reference suite


def test_compare_reference_runs_with_a_paired_bootstrap(tmp_path):
    import evalkit

    items = load_suite("reference").references
    copycat = MockBackend(model="copycat", replies=lambda m: next(i.reply for i in items if i.context[-1].content == m[-1]["content"]))
    generic = MockBackend(model="generic", replies=["Tell me more about that."])
    evalkit.run(copycat, "reference", out=tmp_path / "copycat", report=False)
    evalkit.run(generic, "reference", out=tmp_path / "generic", report=False)
    result = run_cli("compare", tmp_path / "copycat", "--baseline", tmp_path / "generic", "--out", tmp_path / "cmp", "--bootstrap", "200")
    assert result.code == 0, result.output
    (contrast,) = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["reference"]
    assert (contrast["a"], contrast["b"]) == ("copycat", "generic")
    bleu = contrast["metrics"]["bleu"]
    assert bleu["score_a"] == pytest.approx(1.0) and bleu["difference"] > 0.5 and bleu["p_value"] < 0.05
    # Nobody judges a reference suite: no command warns that its judge is unchecked.
    gated = run_cli("gate", "--baseline", tmp_path / "generic", "--candidate", tmp_path / "copycat")
    assert "not been checked" not in gated.output and "vignettes" not in (tmp_path / "copycat" / "gate.md").read_text()
    assert run_cli("report", tmp_path / "copycat", "--out", tmp_path / "r.html").code == 0
    assert "not been checked" not in (tmp_path / "r.html").read_text()
