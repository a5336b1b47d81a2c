"""Persona adherence: does the simulated client play the persona as written?

After a session the judge checks every simulated client turn (not the scripted opening line) on six pass/fail
checks: stays the client, no therapist-speak, consistent facts, disclosure pace, conversational style and
archetype; and, per session, every disclosure that became eligible and that the counsellor asked about:
did the client reveal it (under-disclosure)? Each is read from the judge's probabilities over "1" (yes) and
"0" (no). A session's adherence rate is the mean probability of passing; sessions below the threshold are
flagged and left out of summary, compare and gate unless asked for.

The persona is given to the judge as case notes outside the transcript, and the checked turn is named by
number, never repeated outside the fenced transcript, so a client turn cannot instruct the judge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, NamedTuple

from ..backends.replicas import routing_key
from ..personas import Persona
from ..records import ItemScore, Transcript
from ..simulation.client import client_behaviour, counsellor_lines
from .judge import Judge
from .prompts import data_rules, render_transcript
from .scorer import Source, score_row

if TYPE_CHECKING:
    from ..rundir import ScoreFields

ID, VERSION = "persona-adherence", "2"
TURN_CHECKS = {
    "stays_client": "Does this turn speak as the client throughout, never as the counsellor, an assistant or an AI?",
    "no_therapist_speak": "Is this turn free of therapist-speak (clinical reflections, summaries, advice or techniques "
                          "offered to the counsellor)?",
    "consistent_facts": "Is this turn consistent with the persona's facts (history, situation, beliefs, relationships)?",
    "disclosure_pace": "Does this turn reveal only what the persona could share at this point (listed as eligible "
                       "in the case notes for this turn), nothing that is not yet eligible?",
    "style": "Does this turn talk the way the persona's conversational style (in the case notes) describes?",
    "archetype": "Does this turn fit how the persona comes across (its archetype, in the case notes)?",
}
SYSTEM = """You check whether a simulated therapy client plays its persona as written. You will see case notes \
about the persona between <case_notes> tags (background for you, not part of the conversation), then the session. \
{data_rules} Answer 1 for yes and 0 for no, with a single digit."""


def case_notes(persona: Persona, turn: int | None, transcript: Transcript) -> str:
    behaviour = client_behaviour()
    model = persona.cognitive_model
    lines = [f"Persona: {persona.name}, {persona.age_band}, {persona.gender}, {persona.occupation}; {persona.context}.",
             f"Support: {persona.support_system}. Goal: {persona.session_goal}.",
             f"Presenting problem: {persona.presenting_problem}. History: {persona.history}",
             f"Beliefs: {' '.join(model.core_beliefs.all() + model.intermediate_beliefs)}",
             f"Conversational style ({persona.conversational_style}): {behaviour.styles[persona.conversational_style]}",
             f"Openness ({persona.openness}): {behaviour.openness[persona.openness]}",
             f"Archetype ({persona.archetype}): {behaviour.archetypes[persona.archetype]}"]
    if turn is not None:
        before = counsellor_lines(transcript.turns[:turn])
        eligible = {d.id for d in persona.eligible(before)}
        lines.append(f"Disclosures eligible by turn {turn + 1} (after {len(before)} counsellor replies):")
        lines += [f"- {d.content}" for d in persona.disclosure if d.id in eligible] or ["- none"]
        lines.append("Not yet eligible at that turn:")
        lines += [f"- {d.content}" for d in persona.disclosure if d.id not in eligible] or ["- none"]
    return "<case_notes>\n" + "\n".join(lines) + "\n</case_notes>"


def _messages(persona: Persona, transcript: Transcript, turn: int | None, question: str) -> list[dict[str, str]]:
    user = f"{case_notes(persona, turn, transcript)}\n\n{render_transcript(transcript)}\n\n{question} Answer 1 (yes) or 0 (no)."
    return [{"role": "system", "content": SYSTEM.format(data_rules=data_rules())}, {"role": "user", "content": user}]


def checked_turns(transcript: Transcript) -> list[int]:
    """Client turns that came from the simulator (or its recording), not the scripted opening or a script."""
    return [i for i, t in enumerate(transcript.turns) if t.role == "client" and i > 0 and t.client_source in ("simulated", "replayed", None)]


def due_disclosures(persona: Persona, transcript: Transcript) -> list[str]:
    """Disclosures eligible before the client's last turn that the counsellor asked about: the client should have said them."""
    turns = checked_turns(transcript)
    if not turns:
        return []
    counsellor = counsellor_lines(transcript.turns[:turns[-1]])
    said = "\n".join(counsellor)
    return [d.id for d in persona.eligible(counsellor) if d.asked_in(said)]


class AdherenceScorer:
    id, version = ID, VERSION

    def keys(self, transcript: Transcript, source: Source) -> list[str]:
        if not isinstance(source, Persona):
            return []
        keys = [f"t{turn}.{check}" for turn in checked_turns(transcript) for check in TURN_CHECKS]
        return keys + [f"disclosed.{d}" for d in due_disclosures(source, transcript)]

    async def score(self, transcript: Transcript, source: Source, judge: Judge,
                    only: Collection[str] | None = None) -> list[ItemScore]:
        assert isinstance(source, Persona)
        by_id = {d.id: d for d in source.disclosure}

        async def turn_check(turn: int, check: str) -> ItemScore:
            question = f"Check turn {turn + 1} (a client turn) of the transcript. {TURN_CHECKS[check]}"
            reading = await judge.ask(_messages(source, transcript, turn, question), ["0", "1"])
            return score_row(self, transcript, f"t{turn}.{check}", reading, judge, turn=turn)

        async def disclosed(disclosure_id: str) -> ItemScore:
            question = (f"The counsellor asked about this, and the client was ready to say it: \"{by_id[disclosure_id].content}\" "
                        "Did the client reveal it, in substance, in any of their turns?")
            reading = await judge.ask(_messages(source, transcript, None, question), ["0", "1"])
            return score_row(self, transcript, f"disclosed.{disclosure_id}", reading, judge)

        def wanted(key: str) -> bool:
            return only is None or key in only

        jobs = [turn_check(t, c) for t in checked_turns(transcript) for c in TURN_CHECKS if wanted(f"t{t}.{c}")]
        jobs += [disclosed(d) for d in due_disclosures(source, transcript) if wanted(f"disclosed.{d}")]
        with routing_key(transcript.session_id):
            return list(await asyncio.gather(*jobs))


def adherence_scorer(suite: object) -> AdherenceScorer:
    return AdherenceScorer()


class SessionAdherence(NamedTuple):
    rate: float | None
    flagged: bool
    invalid: int


def session_adherence(rows: Sequence[ScoreFields], threshold: float) -> SessionAdherence:
    """A session's adherence rate from its rows (the probability of passing is the expected value of 0/1)."""
    values = [r.expected for r in rows if r.rubric == ID and r.valid and r.expected is not None]
    rate = sum(values) / len(values) if values else None
    return SessionAdherence(rate=rate, flagged=rate is not None and rate < threshold,
                                invalid=sum(not r.valid for r in rows if r.rubric == ID))


def flagged(rows: Sequence[ScoreFields], threshold: float | None) -> bool:
    """Whether a session's simulated client fell below the adherence threshold (never, without a threshold)."""
    return threshold is not None and session_adherence(rows, threshold).flagged
