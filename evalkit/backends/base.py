"""The one small async interface every backend implements, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import BackendError
from ..records import BackendRecord as BackendInfo
from ..suites import SamplingParams

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float


@dataclass(frozen=True)
class ChoiceDistribution:
    """The judge's probabilities over a fixed set of answers.

    `probs` is conditional on answering with one of the choices (sums to 1).
    `mass` is the unconditional probability the model put on the choices, when the backend can know it
    (None when the server applied the constraint before reporting probabilities).
    `constrained` says whether decoding was restricted to the choices.
    """

    probs: dict[str, float]
    mass: float | None
    constrained: bool


class ContextLengthExceeded(Exception):
    """The prompt does not fit the model's context window (an expected outcome, not a user error)."""


class RequestRejected(Exception):
    """The server refused this one request (HTTP 4xx other than context length)."""


class BackendUnavailable(BackendError):
    """The backend stopped answering (connection refused, repeated 5xx): the run cannot go on."""


@runtime_checkable
class Backend(Protocol):
    info: BackendInfo

    async def chat(self, messages: list[Message], params: SamplingParams) -> Completion: ...

    async def choice_distribution(self, messages: list[Message], choices: list[str]) -> ChoiceDistribution: ...

    async def aclose(self) -> None: ...
