"""Judge-based pairwise preference, after the PsychoCounsel protocol.

The judge sees the same client input with two therapist replies (or two sessions with the same persona)
and names the better one: system text, option A, option B, the question. With several candidates against one
baseline, every baseline-first prompt of a session begins with the same system text and baseline transcript, and
its requests go to one replica, so the prefix cache serves that part. Every pair is judged in both orders; a verdict
that flips with the order is a tie. Verdicts are read from the judge's probabilities over "A" and "B" through the same rule as every other
judge call (`judging.choice`): no mass or too little mass on A/B is an invalid verdict with its reason.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict

from evalkit.content.rubrics import Rubric
from evalkit.judging.judge import Judge
from evalkit.judging.prompts import data_rules, render_turn
from evalkit.store.records import Transcript

SYSTEM = """You are an experienced clinical supervisor comparing two counselling conversations. Judge which one \
better serves the client, considering: {criteria}.

Each option appears between <option name="A"> and </option> (or B) tags, as numbered <turn> elements. \
{data_rules} Do not prefer an option for its length or its position. Answer with a single letter, A or B."""


class PairwiseVerdict(BaseModel):
    """One judgement of one order; two of these (one per order) decide a pair."""

    model_config = ConfigDict(extra="forbid")

    session: str
    candidate: str
    baseline: str
    order: Literal["candidate-first", "baseline-first"]
    p_first: float | None
    mass: float | None = None
    preferred: Literal["candidate", "baseline"] | None  # None for an exact 50/50 or an invalid judgement
    reason: str | None = None
    judge: str


def _option(name: str, transcript: Transcript) -> str:
    body = "\n".join(render_turn(i, t) for i, t in enumerate(transcript.turns, start=1))
    return f'<option name="{name}">\n{body}\n</option>'


def pairwise_messages(rubric: Rubric, first: Transcript, second: Transcript) -> list[dict[str, str]]:
    criteria = "; ".join(item.name.lower() for item in rubric.items)
    user = f"{_option('A', first)}\n\n{_option('B', second)}\n\nWhich option shows the better counselling? Answer A or B."
    return [{"role": "system", "content": SYSTEM.format(criteria=criteria, data_rules=data_rules())},
            {"role": "user", "content": user}]


async def judge_pair(judge: Judge, rubric: Rubric, session: str, candidate: tuple[str, Transcript],
                     baseline: tuple[str, Transcript]) -> list[PairwiseVerdict]:
    (cand_name, cand), (base_name, base) = candidate, baseline

    async def one(order: str, first: Transcript, second: Transcript, first_is: str) -> PairwiseVerdict:
        reading = await judge.ask(pairwise_messages(rubric, first, second), ["A", "B"])
        row = dict(session=session, candidate=cand_name, baseline=base_name, order=order, judge=judge.name, mass=reading.mass)
        if not reading.valid:
            return PairwiseVerdict(**row, p_first=None, preferred=None, reason=reading.reason)
        p_first = reading.probs["A"]  # type: ignore[index]
        other = "baseline" if first_is == "candidate" else "candidate"
        preferred = first_is if p_first > 0.5 else other if p_first < 0.5 else None
        return PairwiseVerdict(**row, p_first=p_first, preferred=preferred)

    from evalkit.backends.replicas import routing_key  # here, so reading runs never loads the HTTP client

    # Pinned by session: the baseline-first prompts of every candidate begin alike, so one replica's cache serves them.
    with routing_key(f"pairwise:{session}"):
        return list(await asyncio.gather(one("candidate-first", cand, base, "candidate"),
                                         one("baseline-first", base, cand, "baseline")))


def pair_outcome(verdicts: list[PairwiseVerdict]) -> str | None:
    """'win', 'loss' or 'tie' for the candidate; None when a judgement is missing."""
    if any(v.p_first is None for v in verdicts):
        return None
    preferred = [v.preferred for v in verdicts]
    if preferred[0] is not None and preferred[0] == preferred[1]:
        return "win" if preferred[0] == "candidate" else "loss"
    return "tie"


async def reward_pair(chooser, session: str, candidate: tuple[str, Transcript],
                      baseline: tuple[str, Transcript]) -> list[PairwiseVerdict]:
    """The same two verdicts from a reward model (`backends.reward.RewardPairwiseJudge`): P(first better) is the
    logistic of the reward difference, so both orders always agree and ties only come from equal rewards."""
    from evalkit.core.errors import RequestRejected

    (cand_name, cand), (base_name, base) = candidate, baseline
    rows = []
    for order, first, second, first_is in (("candidate-first", cand, base, "candidate"), ("baseline-first", base, cand, "baseline")):
        row = dict(session=session, candidate=cand_name, baseline=base_name, order=order, judge=chooser.name)
        try:
            p_first = await chooser.prefer(first, second)
        except RequestRejected as exc:
            rows.append(PairwiseVerdict(**row, p_first=None, preferred=None, reason=str(exc)[:400]))
            continue
        other = "baseline" if first_is == "candidate" else "candidate"
        rows.append(PairwiseVerdict(**row, p_first=p_first, preferred=first_is if p_first > 0.5 else other if p_first < 0.5 else None))
    return rows
