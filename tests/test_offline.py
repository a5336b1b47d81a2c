"""The offline backend: vLLM in-process (LLM.chat), sessions batched turn by turn, same results format."""

from __future__ import annotations

import asyncio
import json

import pytest

from evalkit.backends.openai_http import OpenAIBackend
from evalkit.content.rubrics import load_rubric
from evalkit.judging.prompts import judge_messages
from evalkit.store.records import Transcript

from .conftest import TINY_MAX_MODEL_LEN, TINY_VLLM_ARGS, check_scores, read_jsonl, run_cli

OFFLINE = ["--vllm-args", TINY_VLLM_ARGS, "--max-model-len", TINY_MAX_MODEL_LEN, "--max-tokens", "24", "--judge-min-mass", "0"]


def _server_distribution(endpoint: str, transcript: Transcript, rubric_id: str, item_id: str) -> dict[str, float]:
    rubric = load_rubric(rubric_id)
    item = next(i for i in rubric.items if i.id == item_id)

    async def ask() -> dict[str, float]:
        backend = await OpenAIBackend.connect(endpoint)
        try:
            levels = [str(level) for level in rubric.scale_of(item).levels]
            return (await backend.choice_distribution(judge_messages(rubric, item, transcript), levels, with_mass=False)).probs
        finally:
            await backend.aclose()

    return asyncio.run(ask())


@pytest.mark.vllm
def test_offline_run_is_batched_and_accepted_by_compare_and_gate(tiny_model, vllm_endpoint, tmp_path):
    offline = tmp_path / "offline"
    result = run_cli("run", "--model", tiny_model, "--backend", "vllm-offline", "--suite", "tes", "--sessions", "6",
                     "--turns", "3", "--out", offline, *OFFLINE)
    assert result.code == 0, result.output
    manifest = json.loads((offline / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["roles"]["therapist"]["kind"] == "vllm-offline"
    transcripts = read_jsonl(offline / "transcripts.jsonl")
    assert len(transcripts) == 6 and all(t["turns"][1]["completion_tokens"] for t in transcripts)
    check_scores(offline, "tes", 6)
    # Turn t of all six sessions went to the engine together: far fewer engine calls than requests.
    line = next(ln for ln in result.output.splitlines() if ln.startswith("in-process vLLM:"))
    requests, batches, largest = (int(w) for w in line.replace("(", " ").replace(")", " ").split() if w.isdigit())
    assert largest >= 6 and batches <= requests / 4, line

    # The offline judge reports the same distribution a vLLM server gives for the same prompt.
    first = Transcript.model_validate(transcripts[0])
    stored = next(r for r in read_jsonl(offline / "scores.jsonl") if r["session_id"] == first.session_id)
    served = _server_distribution(vllm_endpoint, first, "tes", stored["item"])
    assert served == pytest.approx(stored["distribution"], abs=2e-3)

    # A server run judged by the same (offline) judge: compare and gate take both.
    served_run = tmp_path / "served"
    result = run_cli("run", "--endpoint", vllm_endpoint, "--judge-model", tiny_model, "--judge-backend", "vllm-offline",
                     "--suite", "tes", "--sessions", "6", "--turns", "3", "--out", served_run, *OFFLINE)
    assert result.code == 0, result.output
    # A random-weight judge fails most persona checks; the flagged sessions are kept so there is something to compare.
    compared = run_cli("compare", served_run, offline, "--out", tmp_path / "cmp", "--bootstrap", "0", "--include-flagged")
    assert compared.code == 0, compared.output
    assert (tmp_path / "cmp" / "comparison.json").exists()
    gated = run_cli("gate", "--baseline", served_run, "--candidate", offline, "--include-flagged")
    verdict = json.loads((offline / "gate.json").read_text())["verdict"]
    assert gated.code == {"pass": 0, "regression": 1, "undecided": 2}[verdict], gated.output
    assert "Traceback" not in gated.output
