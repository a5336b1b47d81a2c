"""What lands on disk in results/<run-id>/: one pydantic model per file or line."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .suites import SamplingParams


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Turn(_Record):
    role: Literal["client", "therapist"]
    content: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    client_source: Literal["simulated", "replayed", "scripted", "persona"] | None = Field(
        None, description="for client turns: where the words came from")


StopReason = Literal["max_turns", "client_closed", "context_length", "single_response", "script_end"]


class Transcript(_Record):
    session_id: str
    suite: str
    unit: Literal["session", "response"]
    source_id: str = Field(description="persona id for sessions, utterance id for single responses")
    replicate: int
    turns: list[Turn]
    stop_reason: StopReason
    started_at: datetime
    ended_at: datetime

    @property
    def therapist_turns(self) -> int:
        return sum(turn.role == "therapist" for turn in self.turns)


class ItemScore(_Record):
    session_id: str
    source_id: str
    rubric: str
    rubric_version: str
    item: str
    valid: bool
    expected: float | None = Field(None, description="expected score under the judge's distribution")
    distribution: dict[str, float] | None = Field(None, description="score level -> probability (sums to 1)")
    mass: float | None = Field(None, description="probability the judge put on score tokens before restriction, when known")
    reason: str | None = Field(None, description="why the score could not be obtained")
    judge: str


class ReplicaRecord(_Record):
    """One of several endpoints serving a role's model, and how it fared."""

    endpoint: str
    requests: int = Field(description="requests sent to it, including ones that failed")
    failure: str | None = Field(None, description="why it was taken out of the run, if it was")


class BackendRecord(_Record):
    """What is known about the model behind a backend (never a key)."""

    kind: Literal["openai", "vllm-managed", "vllm-offline", "transformers"]
    model: str
    endpoint: str | None = None
    api_key_env: str | None = None
    model_path: str | None = None
    model_hash: str | None = None
    server: str | None = None
    server_version: str | None = None
    replicas: list[ReplicaRecord] | None = None


class AdherenceCheck(_Record):
    turn: int = Field(description="index of the client turn in the transcript")
    check: str
    p_pass: float | None
    reason: str | None = None


class SessionAdherence(_Record):
    """One line of adherence.jsonl: how well the simulated client kept to its persona in one session."""

    session_id: str
    source_id: str
    checks: list[AdherenceCheck]
    rate: float | None = Field(description="mean probability of passing over all checks of all client turns")
    flagged: bool = Field(description="rate below the run's threshold: statistics may exclude the session")
    judge: str


class AdherenceSummary(_Record):
    threshold: float
    sessions_checked: int
    overall: float | None
    per_persona: dict[str, float]
    flagged: list[str]
    invalid_checks: int


class RoleRecord(BackendRecord):
    defaulted_to_therapist: bool = False


class ContentRef(_Record):
    id: str
    version: str
    sha256: str


class RunConfig(_Record):
    """Everything that decides what a session and a score mean. Two runs into one directory must agree on it."""

    suite: ContentRef
    rubrics: list[ContentRef]
    clients_sha256: str
    turns: int
    sampling: dict[str, SamplingParams]
    therapist_system_prompt_sha256: str
    roles: dict[str, str] = Field(description="role -> model identity (content hash or served name)")
    judge_method: str
    adherence_threshold: float | None = Field(None, description="None when persona adherence is not checked")
    client_mode: str = Field("simulated", description="simulated, replay:<run and transcripts hash>, scripted:<file hash>")


class Manifest(_Record):
    evalkit_version: str
    run_id: str
    status: Literal["running", "complete", "interrupted"]
    command: list[str]
    git_commit: str | None
    config: RunConfig
    config_sha256: str
    roles: dict[str, RoleRecord]
    self_play: bool
    self_judged: bool
    sessions_requested: int
    request_seeds: bool = Field(False, description="per-request seeds are not sent (vLLM CPU build crashes with them)")
    started_at: datetime
    ended_at: datetime | None = None
    host: dict[str, str]
    warnings: list[str] = []
    counts: dict[str, int] = {}
    judge_validation: dict[str, Any] | None = Field(
        None, description="the validation report this run's judge was checked with: path, sha256, headline agreement")


class Stat(_Record):
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_invalid: int
    clusters: int
    range: tuple[float, float]


class CriticalFailures(_Record):
    """Share of sessions in which any critical (pass/fail) item failed."""

    rule: str
    items: list[str]
    sessions: int = Field(description="sessions with every critical item scored")
    with_failure: int
    share: float | None
    ci_low: float | None = Field(description="Wilson 95% interval")
    ci_high: float | None
    n_invalid: int = Field(description="sessions where a critical item could not be scored")


class RubricSummary(_Record):
    rubric: str
    version: str
    items: dict[str, Stat]
    composites: dict[str, Stat]
    critical_failures: CriticalFailures | None = None


class Summary(_Record):
    run_id: str
    suite: str
    sessions: int
    ci_method: str
    rubrics: dict[str, RubricSummary]
    adherence: AdherenceSummary | None = None
