"""Score rubric items from the judge's probabilities over the allowed score tokens.

No free text is parsed. Each item's score is the expected value of the judge's distribution over
the scale's levels, kept whole beside it. A score that cannot be obtained is recorded invalid with
its reason, never as zero.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..backends.base import Backend, ContextLengthExceeded, RequestRejected
from ..backends.replicas import routing_key
from ..records import ItemScore, Transcript
from ..rubrics import Item, Rubric
from .prompts import Layout, judge_messages

METHOD = "score-token-probabilities/v1"


@dataclass(frozen=True)
class JudgeSettings:
    min_mass: float = 0.5
    """Unconstrained judges (plain top logprobs) must put at least this much probability on score tokens."""
    adherence_threshold: float | None = 0.8
    """Sessions whose simulated client passes fewer of its persona checks are flagged; None: no checks."""
    layout: Layout = "transcript-first"
    """Where the item goes in the prompt; transcript-first lets the prefix cache serve all of a transcript's items."""


class Judge:
    def __init__(self, backend: Backend, settings: JudgeSettings = JudgeSettings(), *, concurrency: int = 32):
        self.backend = backend
        self.settings = settings
        self._slots = asyncio.Semaphore(concurrency)

    @property
    def name(self) -> str:
        return self.backend.info.model

    async def score_item(self, rubric: Rubric, item: Item, transcript: Transcript) -> ItemScore:
        row = dict(session_id=transcript.session_id, source_id=transcript.source_id, rubric=rubric.id,
                   rubric_version=rubric.version, item=item.id, judge=self.name)
        if transcript.therapist_turns == 0:
            return ItemScore(**row, valid=False, reason="the transcript has no therapist turn to rate")
        levels = [str(level) for level in rubric.scale_of(item).levels]
        try:
            async with self._slots:
                dist = await self.backend.choice_distribution(judge_messages(rubric, item, transcript, self.settings.layout), levels)
        except ContextLengthExceeded:
            return ItemScore(**row, valid=False, reason="the judge prompt is longer than the judge's context window")
        except RequestRejected as exc:
            return ItemScore(**row, valid=False, reason=f"the judge endpoint rejected the request: {exc}"[:300])
        if dist.mass is not None and dist.mass == 0:
            return ItemScore(**row, valid=False, mass=0.0, reason="the judge put no probability on any score token")
        if not dist.constrained and dist.mass is not None and dist.mass < self.settings.min_mass:
            return ItemScore(**row, valid=False, mass=dist.mass,
                             reason=f"score tokens carried only {dist.mass:.1%} of the judge's probability "
                                    f"(minimum {self.settings.min_mass:.0%})")
        expected = sum(float(level) * p for level, p in dist.probs.items())
        return ItemScore(**row, valid=True, expected=expected, distribution=dist.probs, mass=dist.mass)

    async def score_transcript(self, transcript: Transcript, rubrics: list[Rubric]) -> list[ItemScore]:
        jobs = [self.score_item(rubric, item, transcript) for rubric in rubrics for item in rubric.items]
        with routing_key(transcript.session_id):  # one replica's prefix cache holds the shared transcript
            return list(await asyncio.gather(*jobs))
