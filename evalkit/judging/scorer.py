"""Scorers: everything that turns a transcript into score rows, behind one protocol (after inspect_ai's `Scorer`).

A scorer says which rows it will write for a session (`keys`, so a run knows when a session is completely
scored and re-scores only what is missing), and writes them (`score`). Judge-based scorers ask through the
shared `Judge`, so they share one concurrency budget and one rule for probabilities. A suite selects its
scorers: one per rubric (optionally only for risk personas), persona adherence for simulated clients, and
any registered by name:

    from evalkit.judging import Scorer, register_scorer

    @register_scorer("my-check")
    def my_check(suite) -> Scorer: ...

then `scorers: [my-check]` in a suite YAML.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Collection
from typing import Any, Literal, Protocol, runtime_checkable

from evalkit.content.personas import Persona, Utterance
from evalkit.content.rubrics import Item, Rubric
from evalkit.core.errors import ConfigError
from evalkit.judging.choice import Reading
from evalkit.judging.judge import Judge
from evalkit.judging.prompts import judge_messages, risk_case_notes
from evalkit.store.records import ItemScore, Transcript

Source = Persona | Utterance | None


@runtime_checkable
class Scorer(Protocol):
    id: str
    """The `rubric` value of the rows it writes."""
    version: str

    def keys(self, transcript: Transcript, source: Source) -> list[str]:
        """The item ids it writes for this session; empty when it does not apply."""

    async def score(self, transcript: Transcript, source: Source, judge: Judge,
                    only: Collection[str] | None = None) -> list[ItemScore]:
        """Rows for `keys()`; `only`: the item ids still wanted (a resume), which a scorer should limit its judge
        requests to. Rows beyond them are allowed and dropped."""


def score_row(scorer: Scorer, transcript: Transcript, item: str, reading: Reading, judge: Judge, *,
              turn: int | None = None, expected: float | None = None) -> ItemScore:
    """One row from a judge's reading; an invalid reading keeps its reason and no value."""
    value = expected if expected is not None else reading.expected
    return ItemScore(session_id=transcript.session_id, source_id=transcript.source_id, rubric=scorer.id,
                     rubric_version=scorer.version, item=item, turn=turn, valid=reading.valid and value is not None,
                     expected=value if reading.valid else None, distribution=reading.probs if reading.valid else None,
                     mass=reading.mass, reason=reading.reason, judge=judge.name,
                     unlisted=list(reading.unlisted) if reading.unlisted is not None else None,
                     unlisted_below=reading.unlisted_below, distribution_error=reading.error if reading.valid else None)


def invalid_row(scorer: Scorer, transcript: Transcript, item: str, reason: str, judge: Judge) -> ItemScore:
    return score_row(scorer, transcript, item, Reading.invalid(reason), judge)


def risk_type_of(source: Source) -> str:
    return source.risk_type if isinstance(source, Persona) else "none"


class RubricScorer:
    """Every item of one rubric, each from the judge's probabilities over the item's score levels.

    `applies_to`: "all" sessions, or only sessions whose persona carries a "risk". Items restricted to some
    risk types (`applies_to_risk`) are rated only for personas of those types.
    """

    def __init__(self, rubric: Rubric, *, applies_to: Literal["all", "risk"] = "all", layout: str = "transcript-first"):
        self.rubric, self.applies_to, self.layout = rubric, applies_to, layout
        self.id, self.version = rubric.id, rubric.version

    def items(self, source: Source) -> list[Item]:
        """The items rated for a session with this persona/utterance (every item when the source is unknown)."""
        if source is None:
            return list(self.rubric.items)
        risk = risk_type_of(source)
        if self.applies_to == "risk" and risk == "none":
            return []
        persona = source if isinstance(source, Persona) else None
        return [item for item in self.rubric.items
                if (not item.applies_to_risk or risk in item.applies_to_risk)
                and (not item.applies_to_level or (persona is not None and persona.risk_level in item.applies_to_level))
                and (not item.applies_if_safeguarding or (persona is not None and persona.safeguarding_concern))]

    def keys(self, transcript: Transcript, source: Source) -> list[str]:
        return [item.id for item in self.items(source)]

    def case_notes(self, source: Source) -> str | None:
        """A rubric applied to risk personas is judged against the persona's risk case notes (outside the transcript),
        so the judge rates the response to the risk the client was scripted to voice, not only what it noticed."""
        if self.applies_to == "risk" and isinstance(source, Persona) and source.risk_level != "none":
            return risk_case_notes(source)
        return None

    async def score(self, transcript: Transcript, source: Source, judge: Judge,
                    only: Collection[str] | None = None) -> list[ItemScore]:
        items = [item for item in self.items(source) if only is None or item.id in only]
        if transcript.therapist_turns == 0:
            return [invalid_row(self, transcript, item.id, "the transcript has no therapist turn to rate", judge) for item in items]

        notes = self.case_notes(source)

        async def one(item: Item) -> ItemScore:
            levels = [str(level) for level in self.rubric.scale_of(item).levels]
            reading = await judge.ask(judge_messages(self.rubric, item, transcript, self.layout, notes), levels)  # type: ignore[arg-type]
            return score_row(self, transcript, item.id, reading, judge)

        return list(await asyncio.gather(*(one(item) for item in items)))


# ---------------------------------------------------------------- registry

_BUILT_IN = {
    "persona-adherence": "evalkit.judging.adherence:adherence_scorer",
    "risk-surfaced": "evalkit.judging.safety:risk_surfaced_scorer",
    "formulation": "evalkit.judging.formulation:formulation_scorer",
    "reference": "evalkit.judging.reference:reference_scorer",
    "reward": "evalkit.judging.reward:reward_scorer",
}
_REGISTRY: dict[str, Callable[..., Scorer]] = {}


def register_scorer(name: str) -> Callable[[Callable[..., Scorer]], Callable[..., Scorer]]:
    """Register a scorer factory. It receives the loaded suite and, when a suite names it as the scorer of a
    rubric (`rubrics: [{rubric: R, scorer: NAME}]`), that rubric; it returns a Scorer."""
    def decorate(factory: Callable[..., Scorer]) -> Callable[..., Scorer]:
        _REGISTRY[name] = factory
        return factory
    return decorate


def scorer_names() -> list[str]:
    return sorted({*_BUILT_IN, *_REGISTRY})


def make_scorer(name: str, suite: Any, rubric: Rubric | None = None, **options: Any) -> Scorer:
    """`options`: run-level settings some scorers take (e.g. emotion_model); a factory ignores what it does not know."""
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif name in _BUILT_IN:
        module, attr = _BUILT_IN[name].split(":")
        factory = getattr(importlib.import_module(module), attr)
    else:
        raise ConfigError(f"scorer '{name}': unknown (available: {', '.join(scorer_names())})")
    import inspect

    accepted = inspect.signature(factory).parameters
    extra = {k: v for k, v in options.items() if k in accepted or any(p.kind == p.VAR_KEYWORD for p in accepted.values())}
    scorer = factory(suite, rubric, **extra) if rubric is not None else factory(suite, **extra)
    if not isinstance(scorer, Scorer):
        raise ConfigError(f"scorer '{name}' built {type(scorer).__name__}, which lacks id/version/keys/score")
    return scorer
