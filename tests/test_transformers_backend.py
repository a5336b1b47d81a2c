"""The in-process transformers backend, end to end through `evalkit run` (no server)."""

import json

import pytest

from .conftest import check_scores, read_jsonl, run_cli

pytestmark = pytest.mark.model  # loads model weights in-process (transformers/torch)


def test_transformers_backend_run(tiny_model, tmp_path):
    out = tmp_path / "run"
    result = run_cli("run", "--model", tiny_model, "--backend", "transformers", "--suite", "psychocounsel",
                     "--sessions", "3", "--max-tokens", "16", "--out", out, "--judge-min-mass", "0")
    assert result.code == 0, result.output
    assert len(read_jsonl(out / "transcripts.jsonl")) == 3
    rows = check_scores(out, "psychocounsel", 3)
    # The backend knows the unconstrained mass too: a random 1024-token model puts little on five digits.
    assert all(0 < row["mass"] < 0.5 for row in rows)
    # With the default minimum mass those same scores are invalid, each with its reason, never zero.
    strict = run_cli("run", "--model", tiny_model, "--backend", "transformers", "--suite", "psychocounsel",
                     "--sessions", "1", "--max-tokens", "8", "--out", tmp_path / "strict", "-q")
    assert strict.code == 0, strict.output
    strict_rows = read_jsonl(tmp_path / "strict" / "scores.jsonl")
    assert strict_rows and all(not r["valid"] and r["expected"] is None and "minimum 50%" in r["reason"] for r in strict_rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["roles"]["therapist"]["kind"] == "transformers"
    assert manifest["roles"]["judge"]["server"] == "transformers"
