"""The values that cross evalkit's layers: what a backend is asked and what it answers.

This module imports nothing from evalkit, so every layer (backends, simulation, judging, the CLI)
can depend on it without depending on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, str]
"""{"role": "system"|"user"|"assistant", "content": str}"""

RoleName = Literal["therapist", "client", "judge"]
ROLES: tuple[RoleName, ...] = ("therapist", "client", "judge")


class SamplingParams(BaseModel):
    """How a role's replies are sampled. Validated before any request is sent."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0, le=5)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1, le=1_000_000)
    seed: int | None = Field(None, ge=0, description="sent to backends that honour it; recorded in the manifest")
    ignore_eos: bool = Field(False, description="vLLM only: always generate max_tokens (for benchmarks)")
    response_schema: dict | None = Field(None, description="a JSON schema the reply must follow (structured outputs)")

    def request_fields(self, *, send_seed: bool = True) -> dict:
        """The fields of an OpenAI-compatible request; vLLM's extension only when asked for."""
        exclude = {"response_schema"} | ({"seed"} if self.seed is None or not send_seed else set())
        if not self.ignore_eos:
            exclude.add("ignore_eos")
        fields = self.model_dump(exclude=exclude)
        if self.response_schema is not None:
            fields["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "evalkit", "schema": self.response_schema, "strict": True}}
        return fields


@dataclass(frozen=True)
class Completion:
    """One reply. `text` is what was said; `reasoning` is thinking the model did before it (never shown on)."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    reasoning: str | None = None
    reasoning_tokens: int | None = None


@dataclass(frozen=True)
class ChoiceDistribution:
    """A judge's probabilities over a fixed set of answers.

    `probs` is conditional on answering with one of the choices (sums to 1, or is empty when the judge put
    no probability on any). `mass` is the probability the model itself put on the choices before any
    constraint, when the backend can know it. `constrained` says whether decoding was restricted to the
    choices (then `probs` is exact over every choice, not only those in a top-k list).

    Read from a list of the most likely first tokens (top logprobs), an answer may be missing from the list:
    `unlisted` names those answers, each of which carried at most `unlisted_below` (the list's bound), so
    `probs` (0 for them) is off by at most `error` and the mass lies between `mass` and `mass_high`.
    `can_constrain`: the backend can also read the exact distribution with a request restricted to the choices
    (`choice_distribution(..., with_mass=False)`).
    """

    probs: dict[str, float]
    mass: float | None
    constrained: bool
    unlisted: tuple[str, ...] = ()
    unlisted_below: float | None = None
    can_constrain: bool = False

    @property
    def error(self) -> float | None:
        """The largest total-variation distance between `probs` and the exact distribution over the choices (each
        choice one token): 0 when every choice was read, None when nothing bounds it.

        Listed choices carry `mass` L, unlisted ones S <= n * unlisted_below; the exact distribution is the listed
        probabilities over L + S, `probs` is them over L, so the distance is S / (L + S)."""
        if self.constrained or not self.unlisted:
            return 0.0
        if self.unlisted_below is None or self.mass is None:
            return None
        hidden = len(self.unlisted) * self.unlisted_below
        return hidden / (self.mass + hidden) if self.mass + hidden > 0 else 1.0

    @property
    def mass_high(self) -> float | None:
        """The most the mass can be: `mass` plus what the unlisted choices could carry."""
        if self.mass is None or (self.unlisted and self.unlisted_below is None):
            return None
        return min(1.0, self.mass + len(self.unlisted) * (self.unlisted_below or 0.0))
