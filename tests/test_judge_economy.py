"""One judge request per reading: what it reads, when a second request is due, and what a run sends.

A reading is one unconstrained request whose top logprobs, folded onto the allowed answers, give the distribution
and the mass; a request restricted to the answers follows only when an answer is missing from the list, the reading
is valid anyway, and the missing answers could move the distribution by more than FOLD_TOLERANCE. The unit tests
drive that rule through a scripted judge with a known full distribution; the run tests count the requests a
stand-in vLLM server receives (tests/faulty_server.py); the last test proves the fold against real vLLM.
"""

# ruff: noqa: F811 - tests take the imported `faulty_server` fixture as a parameter
from __future__ import annotations

import asyncio
import json
import math
from collections import Counter

import pytest

from evalkit.backends.openai_http import OpenAIBackend, fold_top_logprobs, list_bound
from evalkit.backends.replicas import ReplicaPool
from evalkit.content.rubrics import load_rubric
from evalkit.core.types import ChoiceDistribution
from evalkit.judging import Judge, JudgeSettings
from evalkit.judging.choice import FOLD_TOLERANCE
from evalkit.store.records import BackendRecord

from .conftest import read_jsonl, run_cli
from .faulty_server import _faulty_server_module, faulty_server  # noqa: F401 - pytest fixtures, used by name

CHOICES = ["0", "1", "2", "3"]
MESSAGES = [{"role": "user", "content": "rate it"}]


def tv(a: dict[str, float], b: dict[str, float]) -> float:
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def vllm_list(full: dict[str, float], k: int, sampled: str) -> list[tuple[str, float]]:
    """What vLLM's chat endpoint lists for top_logprobs=k: the sampled token first, then the most likely, k in all."""
    ranked = sorted(full.items(), key=lambda kv: -kv[1])
    listed = [(sampled, full[sampled])] + [kv for kv in ranked if kv[0] != sampled]
    return listed[:k]


class TopListJudge:
    """A scripted vLLM-like judge with a known full next-token distribution: one unconstrained request returns its
    top-k list folded as evalkit folds a server's; a constrained request returns the exact distribution over the choices."""

    def __init__(self, full: dict[str, float], k: int = 20, sampled: str | None = None):
        self.full, self.k, self.requests = full, k, []
        # The least likely non-answer token is sampled: listed first, it displaces the k-th most likely.
        self.sampled = sampled or min((t for t in full if t not in CHOICES), key=full.get)
        self.info = BackendRecord(kind="scripted", model="top-list")

    def exact(self, choices: list[str]) -> dict[str, float]:
        total = sum(self.full.get(c, 0.0) for c in choices)
        return {c: self.full.get(c, 0.0) / total for c in choices}

    async def chat(self, messages, params):  # pragma: no cover - never asked to talk
        raise AssertionError("a judge is not asked to chat")

    async def choice_distribution(self, messages, choices, *, with_mass: bool = True) -> ChoiceDistribution:
        self.requests.append("unconstrained" if with_mass else "constrained")
        if not with_mass:
            return ChoiceDistribution(probs=self.exact(choices), mass=None, constrained=True)
        return fold_top_logprobs(vllm_list(self.full, self.k, self.sampled), choices, asked=self.k, exact=True, can_constrain=True)

    async def aclose(self) -> None:
        return None


def distribution(answers: dict[str, float], others: int, rest: float | None = None) -> dict[str, float]:
    """Answers with the given probabilities, and `others` non-answer tokens sharing the rest equally."""
    left = 1.0 - sum(answers.values()) if rest is None else rest
    return {**answers, **{f"tok{i}": left / others for i in range(others)}}


def ask(judge_backend, min_mass: float = 0.5):
    return asyncio.run(Judge(judge_backend, JudgeSettings(min_mass=min_mass)).ask(MESSAGES, CHOICES))


# ---------------------------------------------------------------- the fold and its bound

def test_an_unlisted_token_never_carries_more_than_the_bound_even_when_the_sampled_token_displaces_the_kth():
    full = {f"t{i}": w for i, w in enumerate([0.3, 0.2, 0.1] + [0.01] * 39 + [0.0001] * 10)}
    full = {t: p / sum(full.values()) for t, p in full.items()}
    for sampled in ("t0", "t25", "t45"):  # inside the top list, just outside it, far down
        listed = vllm_list(full, 20, sampled)
        bound = list_bound([p for _, p in listed], 20)
        assert all(p <= bound for t, p in full.items() if t not in dict(listed))
    # the (k-1)-th largest is the bound the list can promise; the smallest listed probability is not one
    listed = vllm_list(full, 20, "t45")
    assert min(p for _, p in listed) < max(p for t, p in full.items() if t not in dict(listed))


def test_with_every_answer_listed_the_fold_is_the_constrained_distribution():
    judge = TopListJudge(distribution({"0": 0.1, "1": 0.4, "2": 0.2, "3": 0.05}, others=30))
    folded = asyncio.run(judge.choice_distribution(MESSAGES, CHOICES))
    assert folded.unlisted == () and folded.error == 0.0 and abs(folded.mass - 0.75) < 1e-12
    assert max(abs(folded.probs[c] - p) for c, p in judge.exact(CHOICES).items()) < 1e-12


def test_the_recorded_error_bounds_the_distance_to_the_exact_distribution():
    for hidden in (0.0, 0.001, 0.004):  # what the unlisted answer really carries, at most the bound
        full = distribution({"0": 0.5, "1": 0.3, "2": 0.05, "3": hidden}, others=25, rest=0.15 - hidden)
        folded = asyncio.run(TopListJudge(full).choice_distribution(MESSAGES, CHOICES))
        assert folded.unlisted == ("3",) and folded.unlisted_below >= hidden
        assert tv(folded.probs, TopListJudge(full).exact(CHOICES)) <= folded.error + 1e-12
        assert folded.mass - 1e-12 <= 0.85 + hidden <= folded.mass_high + 1e-12  # the true mass lies in the recorded interval


# ---------------------------------------------------------------- one request per reading, a second only when due

def test_every_answer_listed_one_request_exact():
    judge = TopListJudge(distribution({"0": 0.1, "1": 0.5, "2": 0.2, "3": 0.1}, others=30))
    reading = ask(judge)
    assert judge.requests == ["unconstrained"]
    assert reading.valid and reading.error == 0.0 and reading.unlisted == () and abs(reading.mass - 0.9) < 1e-12
    assert abs(reading.expected - sum(int(c) * p for c, p in judge.exact(CHOICES).items())) < 1e-12


def test_too_little_mass_is_invalid_after_one_request_with_its_reason_and_bound():
    judge = TopListJudge(distribution({"0": 0.05, "1": 0.1, "2": 0.0001, "3": 0.0001}, others=30))
    reading = ask(judge)
    assert judge.requests == ["unconstrained"]
    assert not reading.valid and reading.probs is None and "15.0%" in reading.reason and "minimum 50%" in reading.reason
    assert "before the choice constraint" in reading.reason  # as when a constrained request came with a mass twin
    assert reading.unlisted == ("2", "3") and reading.unlisted_below is not None and reading.mass + 2 * reading.unlisted_below < 0.5


def test_a_valid_reading_with_an_answer_that_could_matter_reads_the_exact_distribution_once_more():
    judge = TopListJudge(distribution({"0": 0.3, "1": 0.3, "2": 0.004, "3": 0.004}, others=30, rest=0.392))
    reading = ask(judge)
    assert judge.requests == ["unconstrained", "constrained"]
    assert reading.valid and reading.error == 0.0 and reading.unlisted == ("2", "3")
    assert max(abs(reading.probs[c] - p) for c, p in judge.exact(CHOICES).items()) < 1e-12
    assert abs(reading.mass - 0.6) < 1e-12  # the mass still comes from the unconstrained request


def test_a_valid_reading_whose_unlisted_answers_cannot_matter_stays_one_request():
    judge = TopListJudge(distribution({"0": 0.6, "1": 0.3, "2": 0.00001, "3": 0.00001}, others=400, rest=0.09998))
    reading = ask(judge)
    assert judge.requests == ["unconstrained"]
    assert reading.valid and reading.unlisted == ("2", "3") and 0 < reading.error <= FOLD_TOLERANCE
    assert tv(reading.probs, judge.exact(CHOICES)) <= reading.error


def test_minimum_zero_reads_a_judge_with_no_listed_answer_exactly():
    """The tiny random model's case: no score token in its top 20. At minimum 0 the score is valid, so it is read exactly."""
    judge = TopListJudge(distribution({"0": 0.0004, "1": 0.0003, "2": 0.0002, "3": 0.0001}, others=100, rest=0.999))
    assert not ask(judge, min_mass=0.5).valid and judge.requests == ["unconstrained"]
    judge.requests.clear()
    reading = ask(judge, min_mass=0.0)
    assert judge.requests == ["unconstrained", "constrained"] and reading.valid and reading.mass == 0.0
    assert max(abs(reading.probs[c] - p) for c, p in judge.exact(CHOICES).items()) < 1e-12


# ---------------------------------------------------------------- what a run sends

ACT_FM = ["--suite", "act-fm", "--sessions", "8", "--turns", "6", "-q"]


def everyone_at(server) -> list[str]:
    return ["--endpoint", server.url, "--model", "therapist", "--client-endpoint", server.url, "--client-model", "client",
            "--judge-endpoint", server.url, "--judge-model", "judge"]


def test_an_act_fm_run_sends_one_judge_request_per_reading(faulty_server, tmp_path):
    """8 sessions x 6 turns against a stand-in vLLM server (it answers /version): every score row is one unconstrained
    request and none is restricted to the answers, so a session costs as many judge requests as it has readings
    (about 60 here, where every client turn is long enough to check; the mass twin made every reading two)."""
    faulty_server.vllm, faulty_server.judge_mass = True, 0.9
    result = run_cli("run", *everyone_at(faulty_server), *ACT_FM, "--out", tmp_path / "run")
    assert result.code == 0, result.output
    judged = faulty_server.judges()
    rows = read_jsonl(tmp_path / "run" / "scores.jsonl")
    assert len(judged) == len(rows) and not any("structured_outputs" in r.body for r in judged)
    per_session = Counter(r["session_id"] for r in rows)
    assert len(per_session) == 8 and set(per_session.values()) <= set(range(59, 71)), per_session  # 59 plain, 70 with a risk
    assert all(r["valid"] and abs(r["mass"] - 0.9) < 1e-9 and r["unlisted"] == [] and r["distribution_error"] == 0.0 for r in rows)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "reading=one-request-top-logprobs" in manifest["config"]["judge_method"]


def test_too_little_mass_costs_one_request_and_keeps_its_reason(faulty_server, tmp_path):
    faulty_server.vllm, faulty_server.judge_mass = True, 0.3
    assert run_cli("run", "--model", "m", "--backend", "mock", "--judge-endpoint", faulty_server.url, "--judge-model", "judge",
                   "--suite", "psychocounsel", "--sessions", "3", "-q", "--out", tmp_path / "run").code == 0
    rows = read_jsonl(tmp_path / "run" / "scores.jsonl")
    assert len(rows) == 21 and len(faulty_server.judges()) == 21
    assert all(not r["valid"] and r["expected"] is None and abs(r["mass"] - 0.3) < 1e-9 and "30.0%" in r["reason"]
               and "before the choice constraint" in r["reason"] for r in rows), rows[0]


def test_no_mass_check_is_accepted_and_changes_nothing(tmp_path):
    base = ["run", "--model", "m", "--backend", "mock", "--suite", "psychocounsel", "--sessions", "1", "-q"]
    assert run_cli(*base, "--out", tmp_path / "a").code == 0
    assert run_cli(*base, "--out", tmp_path / "b", "--no-mass-check").code == 0
    methods = [json.loads((tmp_path / d / "manifest.json").read_text())["config"]["judge_method"] for d in "ab"]
    assert methods[0] == methods[1] and "mass_check" not in methods[0]
    assert [r["mass"] for r in read_jsonl(tmp_path / "a" / "scores.jsonl")] == [r["mass"] for r in read_jsonl(tmp_path / "b" / "scores.jsonl")]


def test_a_sessions_pairwise_judgements_go_to_one_replica():
    from evalkit.backends.mock import MockBackend
    from evalkit.judging.pairwise import judge_pair

    from .test_judge_integrity import _transcript

    replicas = [MockBackend(model="judge"), MockBackend(model="judge")]
    pool = ReplicaPool(replicas)  # type: ignore[arg-type]
    judge, rubric = Judge(pool), load_rubric("psychocounsel")
    base = _transcript("I feel stuck.", "Tell me more.")

    async def pairs():
        for session in ("s1", "s2", "s3"):
            for candidate in ("c1", "c2"):
                await judge_pair(judge, rubric, session, (candidate, _transcript("I feel stuck.", f"{candidate} reply")), ("b", base))

    asyncio.run(pairs())
    # Each session's 4 requests (2 candidates x 2 orders) went to one replica: never split across the two.
    assert sum(len(r.calls) for r in replicas) == 12 and all(len(r.calls) % 4 == 0 for r in replicas)
    assert {len(r.calls) for r in replicas} == {4, 8}


# ---------------------------------------------------------------- real vLLM

def _judge_prompts() -> list[tuple[list[dict[str, str]], list[str]]]:
    from evalkit.content.personas import load_personas
    from evalkit.judging.adherence import AdherenceScorer, _messages
    from evalkit.judging.prompts import judge_messages, risk_case_notes
    from evalkit.judging.safety import surfaced_messages

    from .test_judge_integrity import _transcript

    persona = next(p for p in load_personas() if p.risk_level != "none")
    transcript = _transcript(persona.opening_line, "What brings you here today?", "I can't sleep and I feel like a burden.",
                             "That sounds heavy. What goes through your mind at night?", "That they'd be better off without me.",
                             "Thank you for telling me. Are you having thoughts of ending your life?", source=persona.id)
    act, safety = load_rubric("act-fm"), load_rubric("safety")
    prompts = [(judge_messages(act, item, transcript), CHOICES) for item in act.items[:8]]
    prompts += [(judge_messages(safety, item, transcript, case_notes=risk_case_notes(persona)),
                 [str(level) for level in safety.scale_of(item).levels]) for item in safety.items[:4]]
    prompts += [(_messages(persona, transcript, question), ["0", "1"])
                for question, _ in list(AdherenceScorer().questions(transcript, persona).values())[:6]]
    return prompts + [(surfaced_messages(persona, transcript, safety), ["0", "1"])]


@pytest.mark.vllm
def test_the_offline_backend_reads_with_one_request_too(tiny_model):
    """vLLM in-process: the same fold, bound and fallback as against a server."""
    from evalkit.backends.vllm_offline import OfflineVLLMBackend

    from .conftest import TINY_MAX_MODEL_LEN, TINY_VLLM_ARGS

    backend = OfflineVLLMBackend(str(tiny_model), info=BackendRecord(kind="vllm-offline", model="tiny"),
                                 vllm_args=TINY_VLLM_ARGS.split(), max_model_len=int(TINY_MAX_MODEL_LEN))

    async def check() -> int:
        from vllm import SamplingParams

        listed = 0
        for messages, choices in _judge_prompts()[:8]:
            folded = await backend.choice_distribution(messages, choices)
            exact = await backend.choice_distribution(messages, choices, with_mass=False)
            assert folded.can_constrain and folded.mass is not None and tv(folded.probs, exact.probs) <= folded.error + 1e-6
            output, _ = await backend._submit(messages, SamplingParams(max_tokens=1, temperature=1.0, top_p=1.0, top_k=0,
                                                                        logprobs=20))
            pairs = [(lp.decoded_token or "", math.exp(lp.logprob)) for lp in output.outputs[0].logprobs[0].values()]
            held = [t for t, _ in pairs if len(t) == 1 and not t.isspace()][:4]
            if len(held) >= 2:
                mine = await backend.choice_distribution(messages, held)
                restricted = await backend.choice_distribution(messages, held, with_mass=False)
                assert mine.unlisted == () and max(abs(mine.probs[c] - restricted.probs[c]) for c in held) < 2e-5
                listed += 1
            reading = await Judge(backend, JudgeSettings(min_mass=0.0)).ask(messages, choices)
            assert reading.valid and tv(reading.probs, exact.probs) <= reading.error + 1e-6
        return listed

    try:
        assert asyncio.run(check()) >= 3
    finally:
        asyncio.run(backend.aclose())


@pytest.mark.vllm
def test_one_request_readings_equal_constrained_readings_within_their_bound_on_vllm(vllm_endpoint):
    """Against the real server: for real judge prompts, the folded top-20 distribution is within its recorded bound of
    what a request restricted to the answers reports; where the answers are listed (single-character tokens the list
    holds), the two are equal to float precision; and a reading the rule sends on to the constrained request is exact."""

    async def check() -> dict[str, float]:
        backend = await OpenAIBackend.connect(vllm_endpoint)
        worst = {"bounded_gap": 0.0, "gap_over_bound": 0.0, "listed_gap": 0.0, "judge_gap": 0.0, "bounded": 0, "listed": 0}
        try:
            for messages, choices in _judge_prompts():
                folded = await backend.choice_distribution(messages, choices)
                exact = await backend.choice_distribution(messages, choices, with_mass=False)
                assert folded.can_constrain and folded.mass is not None and folded.error is not None
                gap = tv(folded.probs, exact.probs)
                assert gap <= folded.error + 1e-6, (choices, folded, exact)
                worst["bounded_gap"] = max(worst["bounded_gap"], gap)
                if folded.error:
                    worst["gap_over_bound"] = max(worst["gap_over_bound"], gap / folded.error)
                worst["bounded"] += 1
                # Answers the list does hold: single-character tokens of this very list, asked for as the choices.
                pairs = await backend._top_logprobs(backend._judge_body(messages))
                held = [t for t, _ in pairs if len(t) == 1 and not t.isspace()][:4]
                if len(held) >= 2:
                    listed = fold_top_logprobs(pairs, held, asked=20, exact=True)
                    restricted = await backend.choice_distribution(messages, held, with_mass=False)
                    assert listed.unlisted == () and listed.error == 0.0
                    gap = max(abs(listed.probs[c] - restricted.probs[c]) for c in held)
                    assert gap < 2e-5, (held, listed.probs, restricted.probs)
                    worst["listed_gap"] = max(worst["listed_gap"], gap)
                    worst["listed"] += 1
                reading = await Judge(backend, JudgeSettings(min_mass=0.0)).ask(messages, choices)
                assert reading.valid and reading.error <= FOLD_TOLERANCE
                gap = tv(reading.probs, exact.probs)
                assert gap <= reading.error + 1e-6
                worst["judge_gap"] = max(worst["judge_gap"], gap)
        finally:
            await backend.aclose()
        return worst

    worst = asyncio.run(check())
    assert worst["bounded"] == len(_judge_prompts()) and worst["listed"] >= 5, worst
    print(f"\nvLLM fold vs constrained: {worst}")


def test_list_bound_edge_cases():
    assert list_bound([], 20) == 1.0 and list_bound([0.5], 1) == 1.0
    assert list_bound([0.5, 0.3, 0.2], 20) == 0.2  # a short list: everything the server had was listed
    assert math.isclose(list_bound([0.1, 0.4, 0.3, 0.2], 4), 0.2)  # the (k-1)-th largest of k listed

