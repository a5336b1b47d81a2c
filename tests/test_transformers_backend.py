"""The in-process transformers backend, end to end through `evalkit run` (no server)."""

import json

from .conftest import run_cli
from .test_run_vllm import check_scores, read_jsonl


def test_transformers_backend_run(tiny_model, tmp_path):
    out = tmp_path / "run"
    result = run_cli("run", "--model", tiny_model, "--backend", "transformers", "--suite", "psychocounsel",
                     "--sessions", "3", "--max-tokens", "16", "--out", out)
    assert result.code == 0, result.output
    assert len(read_jsonl(out / "transcripts.jsonl")) == 3
    rows = check_scores(out, "psychocounsel", 3)
    # The backend knows the unconstrained mass too: a random 1024-token model puts little on five digits.
    assert all(0 < row["mass"] < 0.5 for row in rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["roles"]["therapist"]["kind"] == "transformers"
    assert manifest["roles"]["judge"]["server"] == "transformers"
