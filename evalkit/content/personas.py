"""Simulated clients: multi-turn personas and single-turn client utterances.

Personas live one per file in `simulators/personas/`; utterances in `simulators/utterances/*.yaml`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evalkit.core.errors import ConfigError
from evalkit.core.resources import simulators_dir
from evalkit.core.yamlio import load_yaml_model

Level = Literal["low", "moderate", "high"]
Style = Literal["plain", "verbose", "tangential", "hostile", "guarded", "ingratiating"]
RiskLevel = Literal["none", "low", "moderate", "high"]
RiskType = Literal["none", "passive-ideation", "active-ideation", "self-harm", "abuse-or-violence-at-home",
                   "harm-to-others", "child-protection", "self-neglect"]
BeliefType = Literal["helpless", "unlovable", "worthless"]
# "unspecified"/"unknown"/"unrated" exist for personas imported from sources that do not say.
Archetype = Literal["hopeless-skeptic", "intellectualizer", "anxious-fortune-teller", "overwhelmed-avoider", "unspecified"]
AgeBand = Literal["under-18", "18-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+", "unknown"]
ProcessLevel = Literal["low", "moderate", "high", "unrated"]
Stage = Literal["precontemplation", "contemplation", "preparation", "action", "maintenance"]
_SLUG = r"^[a-z0-9][a-z0-9\-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CoreBeliefs(_Strict):
    """Core beliefs by Beck's three types (as Patient-Psi records them); a persona may hold beliefs of several."""

    helpless: list[str] = []
    unlovable: list[str] = []
    worthless: list[str] = []

    @model_validator(mode="after")
    def _some(self) -> CoreBeliefs:
        if not (self.helpless or self.unlovable or self.worthless):
            raise ValueError("at least one core belief (helpless, unlovable or worthless) is needed")
        return self

    def all(self) -> list[str]:
        return [*self.helpless, *self.unlovable, *self.worthless]

    def by_type(self) -> dict[str, list[str]]:
        return {kind: beliefs for kind in ("helpless", "unlovable", "worthless") if (beliefs := getattr(self, kind))}


class Situation(_Strict):
    """One triggering situation and the reaction it sets off (Beck's situation -> thought -> emotion -> behaviour chain)."""

    situation: str = Field(min_length=1)
    automatic_thoughts: list[str] = Field(min_length=1)
    emotions: list[str] = Field(min_length=1)
    behaviour: str = Field(min_length=1)


class CognitiveModel(_Strict):
    """After Beck's cognitive conceptualisation, in the shape Patient-Psi uses."""

    core_beliefs: CoreBeliefs
    intermediate_beliefs: list[str] = Field(min_length=1)
    automatic_thoughts: list[str] = Field(min_length=1)
    coping_strategies: list[str] = Field(min_length=1)
    situations: list[Situation] = Field(min_length=1)


class ActProfile(_Strict):
    """Where the client stands on the six psychological-flexibility processes."""

    experiential_avoidance: ProcessLevel
    cognitive_fusion: ProcessLevel
    present_moment_contact: ProcessLevel
    self_as_content: ProcessLevel
    values_clarity: ProcessLevel
    committed_action: ProcessLevel


class Disclosure(_Strict):
    """Something the client knows but says only from a fixed turn on: the schedule is the persona's, never the
    counsellor's wording, so every model under test meets the same client."""

    id: str = Field(pattern=_SLUG)
    after_turn: int = Field(ge=0, description="counsellor replies that must come before the client may reveal this")
    risk: bool = Field(False, description="part of the persona's risk: the client voices it in its reply right after "
                                          "counsellor reply `after_turn`, whatever the counsellor said; what the safety "
                                          "judge checks surfaced")
    content: str = Field(min_length=1)


class Persona(_Strict):
    id: str = Field(pattern=_SLUG)
    name: str
    presenting_problem: str
    history: str
    cognitive_model: CognitiveModel
    conversational_style: Style
    act_profile: ActProfile
    openness: Level
    risk_level: RiskLevel
    risk_type: RiskType
    risk_notes: str = Field("", description="case notes for the safety judge (what the risk is, how it should surface, what "
                                            "a safe response does); never shown to the simulated client")
    archetype: Archetype
    age_band: AgeBand
    gender: str
    occupation: str
    context: str = Field(description="culture, country, community")
    support_system: str
    session_goal: str
    disclosure: list[Disclosure] = Field(min_length=1)
    opening_line: str = Field(min_length=1)
    references: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _coherent(self) -> Persona:
        if (self.risk_level != "none") != bool(self.risk_notes.strip()):
            raise ValueError("risk_notes must be given exactly when risk_level is not 'none'")
        if (self.risk_level == "none") != (self.risk_type == "none"):
            raise ValueError("risk_type must be 'none' exactly when risk_level is 'none'")
        turns = [d.after_turn for d in self.disclosure]
        if turns != sorted(turns):
            raise ValueError("disclosure entries must be in order of after_turn")
        ids = [d.id for d in self.disclosure]
        if len(set(ids)) != len(ids):
            raise ValueError("disclosure ids must be unique within a persona")
        if (self.risk_level != "none") != any(d.risk for d in self.disclosure):
            raise ValueError("a persona with a risk needs at least one disclosure with risk: true, and only such a persona may have one")
        return self

    @property
    def safeguarding_concern(self) -> bool:
        """Someone other than an adult client is at risk, the client is a minor at risk, or an adult neglects their own
        basic needs: the cases where a counsellor's duty goes beyond the client's own safety plan."""
        return (self.risk_type in ("abuse-or-violence-at-home", "harm-to-others", "child-protection", "self-neglect")
                or (self.risk_level != "none" and self.age_band == "under-18"))

    @property
    def risk_disclosures(self) -> list[Disclosure]:
        return [d for d in self.disclosure if d.risk]

    def eligible(self, counsellor_replies: int) -> list[Disclosure]:
        """The disclosures the client may make once the counsellor has replied `counsellor_replies` times.

        A function of the turn alone: nothing the counsellor says can release a disclosure early.
        """
        return [d for d in self.disclosure if d.after_turn <= counsellor_replies]

    def due(self, counsellor_replies: int) -> list[Disclosure]:
        """Risk disclosures the client must voice in its reply after counsellor reply `counsellor_replies`."""
        return [d for d in self.disclosure if d.risk and d.after_turn == counsellor_replies]


class Utterance(_Strict):
    id: str = Field(pattern=_SLUG)
    topic: str
    stage: Stage | None = Field(description="implied stage of change; None only for imported data that does not say")
    risk: bool | None = Field(description="carries a risk cue; None only for imported data that does not say")
    text: str = Field(min_length=1)


class UtteranceSet(_Strict):
    version: str
    references: list[str] = Field(min_length=1)
    utterances: list[Utterance] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> UtteranceSet:
        ids = [u.id for u in self.utterances]
        if len(set(ids)) != len(ids):
            raise ValueError("utterance ids must be unique")
        return self


def load_persona(path: Path) -> Persona:
    persona = load_yaml_model(path, Persona)
    if persona.id != path.stem:
        raise ConfigError(f"{path}: field 'id': '{persona.id}' must equal the file name '{path.stem}'")
    return persona


def load_personas(directory: Path | None = None) -> list[Persona]:
    directory = directory or simulators_dir() / "personas"
    if not directory.is_dir():
        raise ConfigError(f"{directory}: persona directory does not exist")
    personas = [load_persona(p) for p in sorted(directory.glob("*.yaml"))]
    if not personas:
        raise ConfigError(f"{directory}: no persona files (*.yaml) found")
    return personas


def load_utterances(path: Path | None = None) -> list[Utterance]:
    """Utterances from one YAML file, or from every YAML file in a folder (ids unique across files)."""
    path = path or simulators_dir() / "utterances"
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    if not files:
        raise ConfigError(f"{path}: no utterance files (*.yaml) found")
    utterances: list[Utterance] = []
    first_seen: dict[str, Path] = {}
    for file in files:
        for utterance in load_yaml_model(file, UtteranceSet).utterances:
            if utterance.id in first_seen:
                raise ConfigError(f"{file}: field 'utterances': id '{utterance.id}' is also used in {first_seen[utterance.id]}")
            first_seen[utterance.id] = file
            utterances.append(utterance)
    return utterances


def content_hash(models: list[BaseModel]) -> str:
    digest = hashlib.sha256()
    for model in models:
        digest.update(model.model_dump_json().encode())
    return digest.hexdigest()
