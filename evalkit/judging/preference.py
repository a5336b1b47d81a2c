"""`evalkit judge eval-pref`: how often does a judge prefer the reply that humans preferred?

Data: PsychoCounsel-Preference format (question, chosen, rejected). Two kinds of judge:
- an LLM judge, asked in both orders (judging/pairwise.py); a verdict that flips with the order is a tie;
- a reward model (sequence classification, through transformers): the higher reward wins.
Accuracy counts ties as half; the Wilson interval is on the decided pairs (ties dropped).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evalkit.content.loaders import PreferencePair
from evalkit.content.rubrics import load_rubric
from evalkit.core.errors import EvalkitError
from evalkit.judging.judge import Judge, JudgeSettings
from evalkit.judging.pairwise import judge_pair, pair_outcome
from evalkit.statistics.winrate import win_summary
from evalkit.store.records import Transcript, Turn


def _transcript(pair_id: str, question: str, reply: str) -> Transcript:
    now = datetime.now(timezone.utc)
    return Transcript(session_id=pair_id, suite="preference", unit="response", source_id=pair_id, replicate=0,
                      turns=[Turn(role="client", content=question), Turn(role="therapist", content=reply)],
                      stop_reason="single_response", started_at=now, ended_at=now)


def summarise(outcomes: list[str | None]) -> dict[str, Any]:
    decided = [o for o in outcomes if o is not None]
    wins, losses, ties = decided.count("win"), decided.count("loss"), decided.count("tie")
    summary = win_summary(wins, losses, ties)
    return {"pairs": len(outcomes), "invalid": len(outcomes) - len(decided), "accuracy": summary["win_rate_ties_half"],
            "accuracy_decided": summary["win_rate"], "ci_low": summary["ci_low"], "ci_high": summary["ci_high"],
            "tie_rate": ties / len(decided) if decided else None, "correct": wins, "wrong": losses, "ties": ties}


async def llm_judge_preference(judge: Judge, pairs: list[PreferencePair]) -> dict[str, Any]:
    """The judge (its concurrency budget and probability rule included) on every pair, in both orders."""
    rubric = load_rubric("psychocounsel")

    async def one(i: int, pair: PreferencePair):
        return await judge_pair(judge, rubric, f"pair-{i}", ("chosen", _transcript(f"pair-{i}", pair.question, pair.chosen)),
                                ("rejected", _transcript(f"pair-{i}", pair.question, pair.rejected)))

    verdicts = await asyncio.gather(*(one(i, p) for i, p in enumerate(pairs, start=1)))
    outcomes = [pair_outcome(v) for v in verdicts]
    return {"judge": judge.name, "kind": "llm-judge, both orders", **summarise(outcomes),
            "verdicts": [v.model_dump() for pair in verdicts for v in pair]}


def reward_model_preference(model_path: str, pairs: list[PreferencePair], *, trust_remote_code: bool = False) -> dict[str, Any]:
    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        raise EvalkitError("reward models need evalkit-clinical[transformers] (transformers and torch)") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(model_path, trust_remote_code=trust_remote_code).eval()
    except (OSError, ValueError) as exc:
        raise EvalkitError(f"--reward-model {model_path}: transformers could not load it ({str(exc).splitlines()[0]})") from None

    def reward(question: str, reply: str) -> float:
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
        text = (tokenizer.apply_chat_template(messages, tokenize=False) if tokenizer.chat_template
                else f"{question}\n\n{reply}")
        with torch.inference_mode():
            encoded = tokenizer(text, return_tensors="pt", truncation=True)
            return float(model(**encoded).logits[0, 0])

    rewards = [(reward(p.question, p.chosen), reward(p.question, p.rejected)) for p in pairs]
    outcomes: list[str | None] = ["win" if c > r else "loss" if c < r else "tie" for c, r in rewards]
    return {"judge": str(model_path), "kind": "reward model", **summarise(outcomes),
            "rewards": [{"chosen": c, "rejected": r} for c, r in rewards]}


async def reward_server_preference(client, pairs: list[PreferencePair], *, concurrency: int = 16) -> dict[str, Any]:
    """`reward_model_preference` through a vLLM reward server (a `backends.reward.RewardClient`): the same report.

    Each reply is scored as the conversation [user: question, assistant: reply], the chat template applied by
    the server; the higher reward wins. A pair the server refuses (e.g. longer than its context window) is
    invalid, with the reason in its `rewards` entry; a server that stops answering ends the evaluation.
    """
    from evalkit.core.errors import RequestRejected

    slots = asyncio.Semaphore(concurrency)

    async def reward(question: str, reply: str) -> float:
        async with slots:
            return await client.reward([{"role": "user", "content": question}, {"role": "assistant", "content": reply}])

    async def one(pair: PreferencePair) -> tuple[float, float] | RequestRejected:
        try:
            chosen, rejected = await asyncio.gather(reward(pair.question, pair.chosen), reward(pair.question, pair.rejected))
        except RequestRejected as exc:
            return exc
        return chosen, rejected

    tasks = [asyncio.ensure_future(one(p)) for p in pairs]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:  # the server stopped answering: stop the requests still in flight
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    outcomes: list[str | None] = []
    rewards: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, RequestRejected):
            outcomes.append(None)
            rewards.append({"chosen": None, "rejected": None, "error": str(result)})
            continue
        c, r = result
        outcomes.append("win" if c > r else "loss" if c < r else "tie")
        rewards.append({"chosen": c, "rejected": r})
    return {"judge": client.info.model, "kind": "reward model (vLLM)", **summarise(outcomes), "rewards": rewards}


def write(report: dict[str, Any], out: Path) -> Path:
    import json

    from evalkit.core.fileio import ensure_directory, write_atomic

    ensure_directory(out, "out")
    path = out / "eval-pref.json"
    write_atomic(path, json.dumps({"created_at": datetime.now(timezone.utc).isoformat(), **report}, indent=2))
    return path


async def evaluate_preference(data: Path, out: Path, *, judge=None, reward_model: Path | None = None,
                              reward_endpoint: str | None = None, limit: int | None = None,
                              min_mass: float = 0.5) -> tuple[dict[str, Any], Path]:
    """`judge eval-pref`: one of an LLM judge (a RoleConfig), an in-process reward model, or a vLLM reward server."""
    from evalkit.content.loaders import load_psychocounsel_preference

    pairs = load_psychocounsel_preference(data)[:limit]
    if reward_model is not None:
        report = reward_model_preference(str(reward_model), pairs)
    elif reward_endpoint is not None:
        from evalkit.backends.reward import RewardClient

        async with RewardClient.connect(reward_endpoint) as client:
            report = await reward_server_preference(client, pairs)
    else:
        from evalkit.backends.roles import judge_backend

        async with judge_backend(judge, out) as (backend, _):
            report = await llm_judge_preference(Judge(backend, JudgeSettings(min_mass=min_mass, adherence_threshold=None)), pairs)
    return report, write(report, out)
