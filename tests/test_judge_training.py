"""`evalkit judge train` on the tiny model: LoRA on judge-format prompts, split by material; the result
loads in the transformers backend and scores with the same probability-based judge."""

from __future__ import annotations

import json

import pytest

from .conftest import run_cli
from .test_judge_validation import _ratings

pytestmark = pytest.mark.model  # loads model weights in-process (transformers/torch)


def test_lora_training_learns_the_score_format_and_the_judge_loads(tiny_model, tmp_path):
    ratings = _ratings(tmp_path / "ratings.jsonl", materials=7)
    out = tmp_path / "judge"
    result = run_cli("judge", "train", "--ratings", ratings, "--base", tiny_model, "--out", out, "--epochs", "3",
                     "--learning-rate", "5e-3", "--validation-fraction", "0.3")
    assert result.code == 0, result.output
    report = json.loads((out / "train.json").read_text())
    train, validation = set(report["materials"]["train"]), set(report["materials"]["validation"])
    assert train and validation and not train & validation and len(train | validation) == 7
    assert report["examples"] == {"train": 9 * len(train), "validation": 9 * len(validation)}
    # Training must move probability onto the score tokens (a mis-masked label would leave the loss where it was).
    assert report["validation_after"]["loss"] < report["validation_before"]["loss"] - 0.3
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "merged" / "config.json").exists()
    # The merged judge is scored exactly like any judge.
    validated = run_cli("judge", "validate", "--ratings", ratings, "--judge-model", out / "merged", "--judge-backend",
                        "transformers", "--out", tmp_path / "validation", "--bootstrap", "20", "--judge-min-mass", "0")
    assert validated.code == 0, validated.output
    summary = json.loads((tmp_path / "validation" / "validation.json").read_text())
    assert summary["invalid_judge_scores"] == 0 and "warmth" in summary["rubrics"]["tes"]["items"]


def test_training_refuses_a_non_empty_output_folder(tiny_model, tmp_path):
    from .conftest import assert_one_line_error

    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "keep.txt").write_text("mine")
    ratings = _ratings(tmp_path / "ratings.jsonl")
    assert_one_line_error(run_cli("judge", "train", "--ratings", ratings, "--base", tiny_model, "--out", tmp_path / "judge"),
                          "not a new or empty folder")
