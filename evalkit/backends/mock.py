"""A scripted stand-in model (kind `mock`), like inspect_ai's `mockllm`: for tests and for checking a suite
offline before spending GPU time on it.

    evalkit run --model mock --backend mock --suite my-suite.yaml      # every role answers from the script

Replies cycle through `replies` (or come from a function of the messages); judge distributions are uniform,
given, or a deterministic function of the prompt, so scores vary across items but repeat exactly. Every
request is recorded in `calls`, so a test can assert what a role was actually sent.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from evalkit.backends.base import BackendSpec, BuildContext
from evalkit.core.types import ChoiceDistribution, Completion, Message, SamplingParams
from evalkit.store.records import BackendRecord

DEFAULT_REPLIES = (
    "That sounds really hard. What feels heaviest about it right now?",
    "I'm not sure. It's been going on for a while and I don't really know where to start.",
    "It makes sense that you'd feel that way. What would you like to be different?",
    "Maybe just to sleep properly again, and not feel so on edge all the time.",
)

Reply = str | Completion
Distribution = dict[str, float] | ChoiceDistribution


def hashed_distribution(messages: list[Message], choices: list[str]) -> dict[str, float]:
    """A deterministic, prompt-dependent distribution over `choices`: different items get different scores."""
    digest = hashlib.sha256("\n".join(m["content"] for m in messages).encode()).digest()
    weights = [1 + digest[i % len(digest)] for i in range(len(choices))]
    total = sum(weights)
    return {c: w / total for c, w in zip(choices, weights, strict=True)}


@dataclass
class Call:
    kind: str  # "chat" or "choice"
    messages: list[Message]
    params: SamplingParams | None = None
    choices: list[str] | None = None


@dataclass
class MockBackend:
    model: str = "mock"
    replies: list[Reply] | Callable[[list[Message]], Reply] = DEFAULT_REPLIES  # type: ignore[assignment]
    distribution: Callable[[list[Message], list[str]], Distribution] | Distribution | None = None
    """None: `hashed_distribution`. A dict maps choice -> probability (missing choices get 0)."""
    mass: float | None = 1.0
    calls: list[Call] = field(default_factory=list)
    info: BackendRecord = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.info = self.info or BackendRecord(kind="mock", model=self.model, server="evalkit-mock")
        self._cycle = itertools.cycle(self.replies) if not callable(self.replies) else None

    async def chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        self.calls.append(Call("chat", [dict(m) for m in messages], params=params))
        reply = self.replies(messages) if callable(self.replies) else next(self._cycle)  # type: ignore[arg-type]
        if isinstance(reply, Completion):
            return reply
        if params.response_schema is not None and not reply.lstrip().startswith("{"):
            # Asked for structured output: every required field filled with the scripted reply.
            import json

            reply = json.dumps({field: reply for field in params.response_schema.get("required", [])})
        words = reply.split()
        truncated = len(words) > params.max_tokens
        text = " ".join(words[:params.max_tokens]) if truncated else reply
        return Completion(text=text, finish_reason="length" if truncated else "stop", prompt_tokens=sum(len(m["content"].split()) for m in messages),
                          completion_tokens=min(len(words), params.max_tokens), latency_s=0.0)

    async def choice_distribution(self, messages: list[Message], choices: list[str], *,
                                  with_mass: bool = True) -> ChoiceDistribution:
        self.calls.append(Call("choice", [dict(m) for m in messages], choices=list(choices)))
        given = self.distribution(messages, choices) if callable(self.distribution) else self.distribution
        if isinstance(given, ChoiceDistribution):
            return given
        probs = hashed_distribution(messages, choices) if given is None else {c: float(given.get(c, 0.0)) for c in choices}
        total = sum(probs.values())
        return ChoiceDistribution(probs={c: p / total for c, p in probs.items()} if total > 0 else {},
                                  mass=(self.mass if with_mass else None) if total > 0 else 0.0, constrained=True)

    async def aclose(self) -> None:
        return None


async def build(spec: BackendSpec, context: BuildContext) -> MockBackend:
    return MockBackend(model=spec.model or "mock", **spec.options)
