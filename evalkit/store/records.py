"""What lands on disk in results/<run-id>/: one pydantic model per file or line."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evalkit.core.types import SamplingParams


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Turn(_Record):
    role: Literal["client", "therapist"]
    content: str = Field(description="what was said: shown to the other side and to the judge")
    reasoning: str | None = Field(None, description="thinking the model did before replying; kept for inspection, "
                                                    "never shown to the client or the judge")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = Field(None, description="completion tokens spent before the reply (thinking and its "
                                                           "delimiters); None when the server could not say")
    latency_s: float | None = None
    finish_reason: str | None = None
    truncated: bool = Field(False, description="the reply hit max_tokens before it finished")
    client_source: Literal["simulated", "replayed", "scripted", "persona"] | None = Field(
        None, description="for client turns: where the words came from")


StopReason = Literal["max_turns", "client_closed", "context_length", "single_response", "script_end"]


class Formulation(_Record):
    """The therapist's brief case formulation, asked for at the end of a session (MentalArena's decoder task)."""

    presenting_problem: str = ""
    relevant_history: str = ""
    core_beliefs: str = ""
    intermediate_beliefs: str = ""
    coping_strategies: str = ""
    situations: str = ""
    automatic_thoughts: str = ""
    emotions: str = ""
    behaviours: str = ""
    risk: str = ""
    raw: str | None = Field(None, description="the reply as given, when it was not valid JSON")


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
    formulation: Formulation | None = None

    @property
    def therapist_turns(self) -> int:
        return sum(turn.role == "therapist" for turn in self.turns)

    @property
    def truncated(self) -> bool:
        return any(turn.truncated for turn in self.turns if turn.role == "therapist")

    @property
    def key(self) -> str:
        """The session's name across runs: persona (or utterance) and replicate."""
        return f"{self.source_id}#{self.replicate}"


class ItemScore(_Record):
    """One row of scores.jsonl: one scorer's reading of one item of one session."""

    session_id: str
    source_id: str
    rubric: str = Field(description="the rubric, or the scorer (persona-adherence, risk-surfaced, ...) that wrote the row")
    rubric_version: str
    item: str
    turn: int | None = Field(None, description="for per-turn checks: the index of the checked turn")
    valid: bool
    expected: float | None = Field(None, description="expected score under the judge's distribution")
    distribution: dict[str, float] | None = Field(None, description="score level -> probability (sums to 1)")
    mass: float | None = Field(None, description="probability the judge itself put on the allowed answers, when known "
                                                 "(read from its top alternatives: a lower bound when an answer was unlisted)")
    reason: str | None = Field(None, description="why the score could not be obtained")
    judge: str
    unlisted: list[str] | None = Field(None, description="allowed answers missing from the judge's top alternatives "
                                                         "(None: not recorded)")
    unlisted_below: float | None = Field(None, description="each unlisted answer carried at most this probability, so the "
                                                            "mass is at most mass + len(unlisted) * unlisted_below")
    distribution_error: float | None = Field(None, description="the most the distribution can differ (total variation) "
                                                               "from the judge's exact one over the answers: 0 when every "
                                                               "answer was read exactly")

    @model_validator(mode="before")
    @classmethod
    def _finite_or_invalid(cls, data: Any) -> Any:
        """A row whose numbers are not finite (a judge's logprob of Infinity, or such a row written by an older
        evalkit, stored as null) is an invalid row with its reason, never a valid row without a score."""
        if not isinstance(data, dict) or not data.get("valid"):
            return data
        expected, dist, mass = data.get("expected"), data.get("distribution"), data.get("mass")
        finite = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
        if finite(expected) and (dist is None or (isinstance(dist, dict) and all(finite(p) for p in dist.values()))) \
                and (mass is None or finite(mass)):
            return data
        return {**data, "valid": False, "expected": None, "distribution": None, "mass": mass if finite(mass) else None,
                "reason": data.get("reason") or "the judge's probabilities were not finite numbers (e.g. a logprob of "
                                                "Infinity): no score could be read"}


class ReplicaRecord(_Record):
    """One of several endpoints serving a role's model, and how it fared."""

    endpoint: str
    requests: int = Field(description="requests sent to it, including ones that failed")
    failure: str | None = Field(None, description="why it was taken out of the run, if it was")


class BackendRecord(_Record):
    """What is known about the model behind a backend (never a key)."""

    kind: str = Field(description="the registered backend kind (openai, vllm, vllm-offline, transformers, mock, or a user's)")
    model: str
    endpoint: str | None = None
    api_key_env: str | None = None
    model_path: str | None = None
    model_hash: str | None = None
    server: str | None = None
    server_version: str | None = None
    replicas: list[ReplicaRecord] | None = None
    retries: dict[str, int] | None = Field(None, description="requests sent again, by cause (HTTP 429, HTTP 503, timeout, "
                                                             "connection, ...); None: none were")


class AdherenceSummary(_Record):
    threshold: float
    rule: str = Field("", description="when a session is flagged")
    sessions_checked: int = Field(description="sessions with at least one readable persona check")
    sessions_unchecked: int = Field(0, description="sessions whose checks could none be read: never counted as checked")
    unchecked: list[str] = []
    overall: float | None = Field(description="mean over checked sessions of their weakest check's pass rate")
    per_persona: dict[str, float]
    per_check: dict[str, float] = Field({}, description="mean probability of passing, per kind of check")
    flagged_by_check: dict[str, int] = Field({}, description="flagged sessions, by the check that failed (a session "
                                                             "may fail several)")
    flagged: list[str]
    invalid_checks: int
    excluded_from_statistics: bool = Field(True, description="flagged sessions are left out of summary, compare and gate")


class RoleRecord(BackendRecord):
    defaulted_to_therapist: bool = False
    identity: str | None = Field(None, description="how runs name this model: content hash, or kind, endpoint and served name")
    seed_sent: bool | None = Field(None, description="whether the run's seed was sent with this role's requests "
                                                     "(None: no seed); a vLLM CPU server is never sent one, it crashes")


class Inclusion(_Record):
    """Which sessions the statistics keep. A run records the policy it was made with (`Manifest.inclusion`); later
    commands use it unless told otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    include_flagged: bool = Field(False, description="keep sessions whose simulated client failed a persona check "
                                                     "systematically")
    exclude_truncated: bool = Field(False, description="leave out sessions with a therapist turn cut off by max_tokens "
                                                       "(a suite's setting)")

    def describe(self) -> str:
        return (f"flagged sessions {'kept' if self.include_flagged else 'left out'}"
                + ("; sessions with a truncated therapist turn left out" if self.exclude_truncated else ""))


class ContentRef(_Record):
    id: str
    version: str
    sha256: str


class RunConfig(_Record):
    """Everything that decides what a session and a score mean. Two runs into one directory must agree on it.

    The number of sessions and the concurrency are left out, so a run can be extended.
    """

    suite: ContentRef
    rubrics: list[ContentRef]
    scorers: list[str] = Field([], description="every scorer that writes rows, with its version")
    clients_sha256: str
    turns: int
    sampling: dict[str, SamplingParams]
    therapist_system_prompt_sha256: str
    roles: dict[str, str] = Field(description="role -> model identity (content hash or served name)")
    judge_method: str
    adherence_threshold: float | None = Field(None, description="None when persona adherence is not checked")
    client_mode: str = Field("simulated", description="simulated, replay:<run and transcripts hash>, scripted:<file hash>")
    seed: int | None = None
    emotion_model: str | None = Field(None, description="reference suites: the emotion classifier's content hash")
    emotion_labels: dict[str, str] = {}


class RunCounts(_Record):
    """What a run directory holds, counted once from its files; the manifest and summary both carry these."""

    sessions: int = 0
    sessions_scored: int = Field(0, description="sessions with every expected score row present")
    score_rows: int = 0
    invalid_score_rows: int = 0
    missing_score_rows: int = Field(0, description="expected rows not yet written (a later --resume writes them)")
    truncated_sessions: int = Field(0, description="sessions with at least one therapist turn cut off by max_tokens")
    reasoning_turns: int = Field(0, description="turns whose reasoning was kept out of what the client and judge saw")
    flagged_sessions: int = Field(0, description="sessions whose simulated client fell below the adherence threshold")
    tokens: dict[str, dict[str, int]] = Field({}, description="role -> prompt and generated tokens over the run's transcripts, "
                                                              "where the server reported them")


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
    started_at: datetime
    ended_at: datetime | None = None
    host: dict[str, str]
    warnings: list[str] = []
    counts: RunCounts = RunCounts()
    rescored_from: str | None = Field(None, description="the run whose transcripts this run re-judged (evalkit rescore)")
    judge_validation: dict[str, Any] | None = Field(
        None, description="the validation report this run's judge was checked with: path, sha256, headline agreement")
    judge_check: dict[str, Any] | None = Field(
        None, description="the fitness check (judge check on the shipped vignettes) this run's judge passed or failed")
    inclusion: Inclusion = Field(Inclusion(), description="which sessions the statistics keep, unless a later command "
                                                          "is told otherwise")

    @field_validator("command", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        """Arguments with bytes that are not UTF-8 (a path) recorded as \\xNN, so the manifest can be written."""
        if isinstance(value, list):
            return [v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") if isinstance(v, str) else v
                    for v in value]
        return value


class Stat(_Record):
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_invalid: int
    clusters: int
    range: tuple[float, float]
    better: Literal["higher", "lower"] = "higher"


class CriticalFailures(_Record):
    """Critical failures, counted only over sessions in which the persona's scheduled risk surfaced.

    A session where the risk never came up tells nothing about how the model handles it: it is reported as
    "risk not surfaced", never as safe.
    """

    rule: str
    items: list[str]
    risk_sessions: int = Field(0, description="sessions with a risk persona scored on this rubric")
    surfaced: int = Field(0, description="of those, sessions where the judge found the scheduled risk voiced by the client")
    not_surfaced: int = Field(0, description="risk never came up: neither safe nor unsafe")
    surfaced_unknown: int = Field(0, description="the risk-surfaced check itself could not be scored")
    sessions: int = Field(description="surfaced sessions whose critical items could all be assessed")
    with_failure: int
    share: float | None = Field(description="with_failure / sessions")
    ci_low: float | None = Field(description="Wilson 95% interval")
    ci_high: float | None
    n_invalid: int = Field(description="surfaced sessions where a critical item could not be scored and none failed")
    warning: str | None = None


class RubricSummary(_Record):
    rubric: str
    version: str
    applies_to: Literal["all", "risk"] = "all"
    items: dict[str, Stat]
    composites: dict[str, Stat]
    critical_failures: CriticalFailures | None = None


class ReferenceSummary(_Record):
    """Reference suites: the corpus figures the field reports, on a 0-1 scale."""

    n: int
    bleu: float | None = Field(None, description="sacrebleu corpus BLEU / 100 (not a mean of sentence BLEU)")
    rouge1: float | None = None
    rouge2: float | None = None
    rougeL: float | None = None
    meteor: float | None = None
    emotion_accuracy: float | None = Field(None, description="share of replies the classifier gives the annotated emotion")
    emotion_n: int = 0
    emotion_model: str | None = None
    label_map: dict[str, str] = Field({}, description="classifier label -> dataset label, as used")
    settings: dict[str, str]


class Summary(_Record):
    run_id: str
    suite: str
    sessions: int = Field(description="every session in the run")
    sessions_analysed: int = Field(0, description="sessions the statistics below are computed over")
    excluded: dict[str, int] = Field({}, description="sessions left out, by reason (flagged, truncated)")
    inclusion: Inclusion = Inclusion()
    invalid_reasons: dict[str, int] = Field({}, description="why score rows are invalid: the most frequent reasons, with counts")
    ci_method: str
    counts: RunCounts = RunCounts()
    rubrics: dict[str, RubricSummary]
    adherence: AdherenceSummary | None = None
    reference: ReferenceSummary | None = None
