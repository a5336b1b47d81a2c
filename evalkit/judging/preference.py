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

from ..errors import EvalkitError
from ..loaders import PreferencePair
from ..records import Transcript, Turn
from ..rubrics import load_rubric
from ..statistics.winrate import win_summary
from .pairwise import judge_pair, pair_outcome


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


async def llm_judge_preference(backend, pairs: list[PreferencePair], concurrency: int = 32) -> dict[str, Any]:
    rubric = load_rubric("psychocounsel")
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int, pair: PreferencePair):
        async with slots:
            return await judge_pair(backend, rubric, f"pair-{i}", ("chosen", _transcript(f"pair-{i}", pair.question, pair.chosen)),
                                    ("rejected", _transcript(f"pair-{i}", pair.question, pair.rejected)))

    verdicts = await asyncio.gather(*(one(i, p) for i, p in enumerate(pairs, start=1)))
    outcomes = [pair_outcome(v) for v in verdicts]
    return {"judge": backend.info.model, "kind": "llm-judge, both orders", **summarise(outcomes),
            "verdicts": [v.model_dump() for pair in verdicts for v in pair]}


def reward_model_preference(model_path: str, pairs: list[PreferencePair], *, trust_remote_code: bool = False) -> dict[str, Any]:
    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        raise EvalkitError("reward models need evalkit[transformers] (transformers and torch)") from None
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


def write(report: dict[str, Any], out: Path) -> Path:
    import json

    out.mkdir(parents=True, exist_ok=True)
    path = out / "eval-pref.json"
    path.write_text(json.dumps({"created_at": datetime.now(timezone.utc).isoformat(), **report}, indent=2))
    return path
