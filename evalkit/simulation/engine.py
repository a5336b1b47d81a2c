"""The session engine: every session in flight at once up to a concurrency bound.

A multi-turn session opens with the persona's first line, then alternates therapist and
client until the therapist has replied `turns` times or the client closes. A single-response
case sends one client utterance and records one reply.
"""

from __future__ import annotations

from datetime import datetime, timezone

from evalkit.backends.base import Backend
from evalkit.backends.replicas import routing_key
from evalkit.content.suites import Case
from evalkit.core.errors import ContextLengthExceeded
from evalkit.core.progress import Reporter
from evalkit.core.types import Completion, SamplingParams
from evalkit.simulation.client import therapist_messages
from evalkit.simulation.reasoning import split_reasoning
from evalkit.store.records import Transcript, Turn


def _turn(role: str, completion: Completion | None, content: str | None = None, source: str | None = None) -> Turn:
    """A transcript turn. Reasoning (a separate field, or <think> blocks in the text) is kept apart from what was said."""
    if completion is None:
        return Turn(role=role, content=content or "", client_source=source)  # type: ignore[arg-type]
    said, thought = split_reasoning(completion.text)
    said = said if content is None else content  # a client reply is cleaned of labels and markers by its source
    reasoning = "\n\n".join(r for r in (completion.reasoning, thought) if r) or None
    return Turn(role=role, content=said, reasoning=reasoning,  # type: ignore[arg-type]
                prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                reasoning_tokens=completion.reasoning_tokens, latency_s=round(completion.latency_s, 4),
                finish_reason=completion.finish_reason, truncated=completion.finish_reason == "length",
                client_source=source)  # type: ignore[arg-type]


class SessionEngine:
    def __init__(self, *, suite_id: str, system_prompt: str, turns: int, therapist: Backend, client,
                 therapist_sampling: SamplingParams, reporter: Reporter | None = None, formulation: bool = False):
        """`client`: where client turns come from (SimulatedClient, ReplayClient or ScriptedClient)."""
        self.suite_id = suite_id
        self.system_prompt = system_prompt
        self.turns = turns
        self.therapist = therapist
        self.client = client
        self.therapist_sampling = therapist_sampling
        self.reporter = reporter or Reporter()
        self.formulation = formulation

    async def _reply(self, backend: Backend, messages: list[dict[str, str]], params: SamplingParams) -> Completion:
        completion = await backend.chat(messages, params)
        self.reporter.turn_done(completion)
        return completion

    async def run_case(self, case: Case) -> Transcript:
        started = datetime.now(timezone.utc)
        with routing_key(case.session_id):  # a session's turns stay on one replica
            formulation = None
            if case.persona is not None:
                turns, stop = await self._session(case)
                unit = "session"
                if self.formulation:
                    formulation = await self._formulation(turns)
            elif case.reference is not None:
                turns, stop = await self._reference(case)
                unit = "response"
            else:
                turns, stop = await self._single_response(case)
                unit = "response"
        return Transcript(session_id=case.session_id, suite=self.suite_id, unit=unit, source_id=case.source_id,
                          replicate=case.replicate, turns=turns, stop_reason=stop, started_at=started,
                          ended_at=datetime.now(timezone.utc), formulation=formulation)

    async def _formulation(self, turns: list[Turn]):
        from evalkit.simulation import formulation

        messages = therapist_messages(self.system_prompt, turns) + [{"role": "user", "content": formulation.INSTRUCTION}]
        params = self.therapist_sampling.model_copy(update={"response_schema": formulation.SCHEMA,
                                                            "max_tokens": max(self.therapist_sampling.max_tokens, 512)})
        try:
            reply = await self._reply(self.therapist, messages, params)
        except ContextLengthExceeded:
            return None
        said, _ = split_reasoning(reply.text)
        return formulation.parse(said)

    async def _session(self, case: Case) -> tuple[list[Turn], str]:
        persona = case.persona
        assert persona is not None
        turns = [Turn(role="client", content=persona.opening_line.strip(), client_source="persona")]
        for number in range(1, self.turns + 1):
            try:
                reply = await self._reply(self.therapist, therapist_messages(self.system_prompt, turns), self.therapist_sampling)
            except ContextLengthExceeded:
                return turns, "context_length"
            turns.append(_turn("therapist", reply))
            if number == self.turns:
                return turns, "max_turns"
            try:
                answer = await self.client.next_turn(persona, case.replicate, turns)
            except ContextLengthExceeded:
                return turns, "context_length"
            if answer is None:
                return turns, "script_end"
            if answer.completion is not None:
                self.reporter.turn_done(answer.completion)
            if answer.text:
                turns.append(_turn("client", answer.completion, answer.text, answer.source))
            if answer.closed:
                return turns, "client_closed"
        raise AssertionError("unreachable")

    async def _reference(self, case: Case) -> tuple[list[Turn], str]:
        """The dialogue so far from the reference item, then the therapist's reply (compared with the reference)."""
        assert case.reference is not None
        turns = [Turn(role=t.role, content=t.content, client_source="scripted" if t.role == "client" else None)
                 for t in case.reference.context]
        return await self._one_reply(turns)

    async def _single_response(self, case: Case) -> tuple[list[Turn], str]:
        assert case.utterance is not None
        return await self._one_reply([Turn(role="client", content=case.utterance.text.strip())])

    async def _one_reply(self, turns: list[Turn]) -> tuple[list[Turn], str]:
        """The therapist's one reply to a fixed dialogue (single-response and reference units)."""
        try:
            reply = await self._reply(self.therapist, therapist_messages(self.system_prompt, turns), self.therapist_sampling)
        except ContextLengthExceeded:
            return turns, "context_length"
        return [*turns, _turn("therapist", reply)], "single_response"
