"""The judge as every scorer sees it: one backend behind one concurrency budget and one probability rule.

One reading is one request (its top logprobs give the distribution and the mass); a second request, restricted to
the answers, only when `judging.choice.needs_exact` says the folded distribution could be off by more than
FOLD_TOLERANCE (an answer missing from the judge's top alternatives of a reading that is valid anyway)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from evalkit.backends.base import Backend
from evalkit.core.errors import ConfigError, ContextLengthExceeded, RequestRejected
from evalkit.core.types import Message
from evalkit.judging.choice import FOLD_TOLERANCE, Reading, needs_exact, read_choice, with_exact
from evalkit.judging.prompts import Layout

METHOD = "score-token-probabilities/v3"
READING = f"one-request-top-logprobs+constrained-if-error>{FOLD_TOLERANCE:g}"
"""How a reading is made: v2 sent every prompt twice (constrained, plus an unconstrained twin for the mass)."""


@dataclass(frozen=True)
class JudgeSettings:
    min_mass: float = 0.5
    """The model must put at least this much of its own probability on the allowed answers (constrained or not)."""
    check_mass: bool = True
    """No effect since every reading measures the mass in its one request (kept so `--no-mass-check`, config files
    and API calls that set it still work); `min_mass=0` accepts a reading whatever its mass."""
    adherence_threshold: float | None = 0.8
    """Sessions whose simulated client passes fewer of its persona checks are flagged; None: no checks."""
    layout: Layout = "transcript-first"
    """Where the item goes in the prompt; transcript-first lets the prefix cache serve all of a transcript's items."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_mass <= 1:
            raise ConfigError(f"judge min_mass {self.min_mass}: expected a probability between 0 and 1")
        if self.adherence_threshold is not None and not 0 <= self.adherence_threshold <= 1:
            raise ConfigError(f"adherence_threshold {self.adherence_threshold}: expected a probability between 0 and 1")

    @property
    def method(self) -> str:
        """What a run's configuration records about how scores were read (two runs must agree on it)."""
        parts = [METHOD, f"min_mass={self.min_mass}", f"reading={READING}"]
        if self.layout != "transcript-first":
            parts.append(f"layout={self.layout}")
        return ";".join(parts)


class Judge:
    def __init__(self, backend: Backend, settings: JudgeSettings = JudgeSettings(), *, concurrency: int = 32):
        if concurrency < 1:
            raise ConfigError(f"judge concurrency {concurrency}: expected a positive number")
        self.backend = backend
        self.settings = settings
        self._slots = asyncio.Semaphore(concurrency)

    @property
    def name(self) -> str:
        return self.backend.info.model

    async def ask(self, messages: list[Message], choices: list[str]) -> Reading:
        """The judge's reading of one prompt over `choices`; an answer it could not give is an invalid reading."""
        try:
            async with self._slots:
                dist = await self.backend.choice_distribution(messages, choices)
                if needs_exact(dist, self.settings.min_mass):
                    dist = with_exact(dist, await self.backend.choice_distribution(messages, choices, with_mass=False))
        except ContextLengthExceeded:
            return Reading.invalid("the judge prompt is longer than the judge's context window")
        except RequestRejected as exc:
            return Reading.invalid(str(exc))
        return read_choice(dist, self.settings.min_mass)
