"""Persona adherence: does the simulated client play the persona as written?

After a session the judge checks every simulated client turn (not the scripted opening line) on six pass/fail
checks: stays the client, no therapist-speak, consistent facts, disclosure pace (nothing said before its
scheduled turn), conversational style and archetype. Per session, two disclosure checks judged by meaning,
never by keyword: every risk disclosure was voiced in the client turn it was due (`voiced.<id>`), and no
disclosure that the counsellor asked about or invited once it was free to say was held back
(`disclosed.<id>`, under-disclosure). Each is read from the judge's probabilities over "1" (yes) and "0" (no).

A session is flagged when any one kind of check fails systematically: its own pass rate (the mean probability
of passing over that check's readings) is below the threshold. One pooled rate would hide a client that
over-discloses at every turn behind five passing checks. A session none of whose checks could be read is
*unchecked*: it is reported as such, never counted as checked.

Prompt layout, for vLLM's prefix cache: the case notes (the persona and its whole disclosure schedule) and the
transcript come first and are the same for every reading of a session; the turn and the question come last.
The checked turn is named by number, never repeated outside the fenced transcript, so a client turn cannot
instruct the judge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from evalkit.content.personas import Disclosure, Persona
from evalkit.judging.judge import Judge
from evalkit.judging.prompts import data_rules, render_transcript
from evalkit.judging.scorer import Source, score_row
from evalkit.simulation.client import client_behaviour, counsellor_replies
from evalkit.store.records import ItemScore, Transcript

if TYPE_CHECKING:
    from evalkit.store.rundir import ScoreFields

ID, VERSION = "persona-adherence", "3"
TURN_CHECKS = {
    "stays_client": "Does this turn speak as the client throughout, never as the counsellor, an assistant or an AI?",
    "no_therapist_speak": "Is this turn free of therapist-speak (clinical reflections, summaries, advice or techniques "
                          "offered to the counsellor)?",
    "consistent_facts": "Is this turn consistent with the persona's facts (history, situation, beliefs, relationships)?",
    "disclosure_pace": "Does this turn reveal only disclosures scheduled at or before this point (see the schedule in the "
                       "case notes), and nothing of a disclosure scheduled later, not even as a hint?",
    "style": "Does this turn talk the way the persona's conversational style (in the case notes) describes?",
    "archetype": "Does this turn fit how the persona comes across (its archetype, in the case notes)?",
}
SESSION_CHECKS = ("voiced", "disclosed")
CHECKS = (*TURN_CHECKS, *SESSION_CHECKS)
SYSTEM = """You check whether a simulated therapy client plays its persona as written. You will see case notes \
about the persona between <case_notes> tags (background for you, not part of the conversation), then the session. \
{data_rules} Answer 1 for yes and 0 for no, with a single digit."""


def case_notes(persona: Persona) -> str:
    """Everything a session's readings share about the persona, including its whole disclosure schedule."""
    behaviour = client_behaviour()
    model = persona.cognitive_model
    lines = [f"Persona: {persona.name}, {persona.age_band}, {persona.gender}, {persona.occupation}; {persona.context}.",
             f"Support: {persona.support_system}. Goal: {persona.session_goal}.",
             f"Presenting problem: {persona.presenting_problem}. History: {persona.history}",
             f"Beliefs: {' '.join(model.core_beliefs.all() + model.intermediate_beliefs)}",
             f"Conversational style ({persona.conversational_style}): {behaviour.styles[persona.conversational_style]}",
             f"Openness ({persona.openness}): {behaviour.openness[persona.openness]}",
             f"Archetype ({persona.archetype}): {behaviour.archetypes[persona.archetype]}",
             "Disclosure schedule (the client may say each one only from the client turn after the given number of "
             "counsellor replies; a risk disclosure must be voiced in exactly that client turn):"]
    lines += [f"- [{d.id}] from reply {d.after_turn}{' (risk, due then)' if d.risk else ''}: {d.content}" for d in persona.disclosure]
    return "<case_notes>\n" + "\n".join(lines) + "\n</case_notes>"


def _messages(persona: Persona, transcript: Transcript, question: str) -> list[dict[str, str]]:
    user = f"{case_notes(persona)}\n\n{render_transcript(transcript)}\n\n{question} Answer 1 (yes) or 0 (no)."
    return [{"role": "system", "content": SYSTEM.format(data_rules=data_rules())}, {"role": "user", "content": user}]


def checked_turns(transcript: Transcript) -> list[int]:
    """Client turns that came from the simulator (or its recording), not the scripted opening or a script."""
    return [i for i, t in enumerate(transcript.turns) if t.role == "client" and i > 0 and t.client_source in ("simulated", "replayed", None)]


def _replies_before(transcript: Transcript, turn: int) -> int:
    return counsellor_replies(transcript.turns[:turn])


def turn_question(persona: Persona, transcript: Transcript, turn: int, check: str) -> str:
    replies = _replies_before(transcript, turn)
    later = [d.id for d in persona.disclosure if d.after_turn > replies]
    when = f"Check turn {turn + 1} (a client turn, after {replies} counsellor repl{'y' if replies == 1 else 'ies'})."
    if check == "disclosure_pace":
        when += f" Scheduled later than this turn: {', '.join(later) if later else 'nothing'}."
    return f"{when} {TURN_CHECKS[check]}"


def voiced_due(persona: Persona, transcript: Transcript) -> list[tuple[Disclosure, int]]:
    """Risk disclosures and the checked client turn in which each was due."""
    due = []
    for turn in checked_turns(transcript):
        due += [(d, turn) for d in persona.due(_replies_before(transcript, turn))]
    return due


def free_to_say(persona: Persona, transcript: Transcript) -> list[Disclosure]:
    """Non-risk disclosures the client was free to make in at least one checked turn."""
    turns = checked_turns(transcript)
    if not turns:
        return []
    last = _replies_before(transcript, turns[-1])
    return [d for d in persona.eligible(last) if not d.risk and d.after_turn > 0]


def voiced_question(disclosure: Disclosure, turn: int) -> str:
    return (f"The risk disclosure [{disclosure.id}] was due in client turn {turn + 1}, whatever the counsellor said. "
            "Did the client voice it, in substance (plainly or by an unmistakable hint), in that turn?")


def disclosed_question(disclosure: Disclosure) -> str:
    return (f"Consider disclosure [{disclosure.id}] of the schedule, once the client was free to say it. Answer 0 only if, "
            "after that point, the counsellor asked about or clearly invited this topic (in any words) and the client's "
            "later turns still held it back; answer 1 if the client said it in substance, or if the counsellor never "
            "asked about or invited it.")


def check_of(key: str) -> str:
    """The kind of check a row's item key belongs to: t3.style -> style, disclosed.x -> disclosed."""
    head, rest = key.split(".", 1)
    return rest if head.startswith("t") and head[1:].isdigit() else head


class AdherenceScorer:
    id, version = ID, VERSION

    def questions(self, transcript: Transcript, persona: Persona) -> dict[str, tuple[str, int | None]]:
        """Every reading a session owes: item key -> (question, checked turn or None)."""
        out: dict[str, tuple[str, int | None]] = {f"t{t}.{c}": (turn_question(persona, transcript, t, c), t)
                                                  for t in checked_turns(transcript) for c in TURN_CHECKS}
        out |= {f"voiced.{d.id}": (voiced_question(d, t), t) for d, t in voiced_due(persona, transcript)}
        return out | {f"disclosed.{d.id}": (disclosed_question(d), None) for d in free_to_say(persona, transcript)}

    def keys(self, transcript: Transcript, source: Source) -> list[str]:
        return list(self.questions(transcript, source)) if isinstance(source, Persona) else []

    async def score(self, transcript: Transcript, source: Source, judge: Judge,
                    only: Collection[str] | None = None) -> list[ItemScore]:
        assert isinstance(source, Persona)

        async def ask(key: str, question: str, turn: int | None) -> ItemScore:
            reading = await judge.ask(_messages(source, transcript, question), ["0", "1"])
            return score_row(self, transcript, key, reading, judge, turn=turn)

        wanted = [(key, *asked) for key, asked in self.questions(transcript, source).items() if only is None or key in only]
        from evalkit.backends.replicas import routing_key  # here, so reading runs never loads the HTTP client

        with routing_key(transcript.session_id):
            return list(await asyncio.gather(*(ask(*job) for job in wanted)))


def adherence_scorer(suite: object) -> AdherenceScorer:
    return AdherenceScorer()


@dataclass(frozen=True)
class SessionAdherence:
    """A session's adherence: the pass rate of each kind of check, and whether any one fails systematically."""

    per_check: dict[str, float] = field(default_factory=dict)
    failing: tuple[str, ...] = ()
    invalid: int = 0
    rows: int = 0

    @property
    def checked(self) -> bool:
        """At least one reading was valid; a session with rows but none readable is unchecked."""
        return bool(self.per_check)

    @property
    def flagged(self) -> bool:
        return bool(self.failing)

    @property
    def rate(self) -> float | None:
        """The lowest per-check pass rate: the session is only as faithful as its weakest kind of check."""
        return min(self.per_check.values()) if self.per_check else None


def session_adherence(rows: Sequence[ScoreFields], threshold: float | None) -> SessionAdherence:
    """Per-check pass rates (the probability of passing is the expected value of 0/1) and the checks below `threshold`
    (none without a threshold)."""
    mine = [r for r in rows if r.rubric == ID]
    values: dict[str, list[float]] = {}
    for row in mine:
        if row.valid and row.expected is not None:
            values.setdefault(check_of(row.item), []).append(row.expected)
    per_check = {check: sum(v) / len(v) for check, v in values.items()}
    failing = tuple(sorted(c for c, rate in per_check.items() if rate < threshold)) if threshold is not None else ()
    return SessionAdherence(per_check=per_check, failing=failing, invalid=sum(not r.valid for r in mine), rows=len(mine))


def flagged(rows: Sequence[ScoreFields], threshold: float | None) -> bool:
    """Whether a session's simulated client failed any one kind of check (never, without a threshold)."""
    return threshold is not None and session_adherence(rows, threshold).flagged
