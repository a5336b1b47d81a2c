"""Where a session's client turns come from.

- simulated: the client model, in character (the default);
- replay: the client turns a baseline run recorded for the same persona and replicate, for as long as
  the therapist's replies are identical to that run's; from the first divergence on, the simulator;
- scripted: fixed client turns from a file, for fully deterministic checks.

Replay and scripts take noise out of a gate: the candidate meets the same client as the baseline did.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from evalkit.backends.base import Backend
from evalkit.content.personas import Persona
from evalkit.core.errors import ConfigError
from evalkit.core.types import Completion, SamplingParams
from evalkit.core.yamlio import load_yaml_model
from evalkit.simulation.client import clean_client_reply, client_messages
from evalkit.simulation.reasoning import split_reasoning
from evalkit.store.records import Transcript, Turn
from evalkit.store.rundir import RunDir


@dataclass(frozen=True)
class ClientTurn:
    text: str
    closed: bool
    source: str
    completion: Completion | None = None


class SimulatedClient:
    mode = "simulated"

    def __init__(self, backend: Backend, sampling: SamplingParams):
        self.backend, self.sampling = backend, sampling

    async def next_turn(self, persona: Persona, replicate: int, turns: list[Turn]) -> ClientTurn | None:
        completion = await self.backend.chat(client_messages(persona, turns), self.sampling)
        said, _ = split_reasoning(completion.text)
        text, closed = clean_client_reply(said)
        return ClientTurn(text, closed, "simulated", completion)


class ReplayClient:
    """Recorded client turns while the therapist has said exactly what it said in the recorded session."""

    def __init__(self, run_dir: Path, fallback: SimulatedClient | None = None):
        store = RunDir(run_dir)
        try:
            manifest = store.require_manifest()
        except ConfigError as exc:
            raise ConfigError(f"replay client: {exc}") from None
        self.recorded: dict[tuple[str, int], Transcript] = {(t.source_id, t.replicate): t for t in store.iter_transcripts()}
        digest = hashlib.sha256("".join(t.model_dump_json() for t in self.recorded.values()).encode()).hexdigest()
        self.mode = f"replay:{manifest.run_id}:{digest[:16]}"
        self.fallback = fallback

    async def next_turn(self, persona: Persona, replicate: int, turns: list[Turn]) -> ClientTurn | None:
        recorded = self.recorded.get((persona.id, replicate))
        if recorded is not None and len(recorded.turns) > len(turns):
            same_so_far = all(a.content == b.content for a, b in zip(recorded.turns, turns, strict=False))
            candidate = recorded.turns[len(turns)]
            if same_so_far and candidate.role == "client":
                last = len(turns) + 1 == len(recorded.turns) and recorded.stop_reason == "client_closed"
                return ClientTurn(candidate.content, last, "replayed")
        assert self.fallback is not None, "the simulated fallback is set once the client backend exists"
        return await self.fallback.next_turn(persona, replicate, turns)


class ClientScripts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    scripts: dict[str, list[str]]  # persona id -> the client's turns after each therapist reply


class ScriptedClient:
    def __init__(self, path: Path, personas: list[Persona]):
        self.scripts = load_yaml_model(path, ClientScripts).scripts
        missing = [p.id for p in personas if p.id not in self.scripts]
        if missing:
            raise ConfigError(f"{path}: field 'scripts': no script for persona '{missing[0]}'")
        self.mode = f"scripted:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"

    async def next_turn(self, persona: Persona, replicate: int, turns: list[Turn]) -> ClientTurn | None:
        index = sum(t.role == "therapist" for t in turns) - 1
        script = self.scripts[persona.id]
        if index >= len(script):
            return None  # the script has run out: the session ends here
        return ClientTurn(script[index], False, "scripted")
