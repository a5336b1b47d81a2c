"""`evalkit judge eval-pref`: a reward model and an LLM judge on human preference pairs (no server needed)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from .conftest import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pcp") / "pairs.parquet"
    rows = [{"question": f"My sister stopped talking to me after the wedding ({i}).",
             "chosen": "That silence sounds painful. What do you make of it?", "rejected": "Forget her, move on.",
             "chosen_model": "a", "rejected_model": "b"} for i in range(5)]
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def reward_model(tiny_model, tmp_path_factory):
    """A tiny random sequence-classification reward model on the tiny model's tokenizer."""
    import torch
    from transformers import AutoConfig, LlamaForSequenceClassification

    out = tmp_path_factory.mktemp("reward") / "rm"
    shutil.copytree(tiny_model, out)
    config = AutoConfig.from_pretrained(out)
    config.num_labels = 1
    torch.manual_seed(3)
    LlamaForSequenceClassification(config).save_pretrained(out)
    return out


@pytest.mark.model
def test_reward_model_accuracy(pairs_file, reward_model, tmp_path):
    result = run_cli("judge", "eval-pref", "--data", pairs_file, "--reward-model", reward_model, "--out", tmp_path)
    assert result.code == 0, result.output
    report = json.loads((tmp_path / "eval-pref.json").read_text())
    rewards = report["rewards"]
    assert len(rewards) == 5
    right = sum(r["chosen"] > r["rejected"] for r in rewards) + 0.5 * sum(r["chosen"] == r["rejected"] for r in rewards)
    assert report["accuracy"] == pytest.approx(right / 5)
    # One reward recomputed directly with transformers.
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(reward_model).eval()
    question = "My sister stopped talking to me after the wedding (0)."
    text = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                          {"role": "assistant", "content": "Forget her, move on."}], tokenize=False)
    with torch.inference_mode():
        direct = float(model(**tokenizer(text, return_tensors="pt")).logits[0, 0])
    assert rewards[0]["rejected"] == pytest.approx(direct, rel=1e-5)


@pytest.mark.model
def test_llm_judge_accuracy_with_both_orders(pairs_file, tiny_model, tmp_path):
    result = run_cli("judge", "eval-pref", "--data", pairs_file, "--judge-model", tiny_model, "--judge-backend",
                     "transformers", "--judge-min-mass", "0", "--out", tmp_path)
    assert result.code == 0, result.output
    report = json.loads((tmp_path / "eval-pref.json").read_text())
    verdicts = report["verdicts"]
    assert len(verdicts) == 10 and {v["order"] for v in verdicts} == {"candidate-first", "baseline-first"}
    outcomes = []
    for i in range(1, 6):
        first, second = (next(v["preferred"] for v in verdicts if v["session"] == f"pair-{i}" and v["order"] == o)
                         for o in ("candidate-first", "baseline-first"))
        outcomes.append(1.0 if first == second == "candidate" else 0.0 if first == second == "baseline" else 0.5)
    assert report["accuracy"] == pytest.approx(sum(outcomes) / 5)


@pytest.mark.model
def test_needs_exactly_one_kind_of_judge(pairs_file, reward_model):
    assert_one_line_error(run_cli("judge", "eval-pref", "--data", pairs_file), "exactly one of an LLM judge")
    assert_one_line_error(run_cli("judge", "eval-pref", "--data", pairs_file, "--reward-model", reward_model,
                                  "--judge-endpoint", "http://127.0.0.1:9"), "exactly one of an LLM judge")
