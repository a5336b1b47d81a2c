"""Suites are data: what is simulated (sessions with personas, or single responses to
utterances), for how many turns, under which therapist prompt, judged on which rubrics.

Built-in suites are the YAML files beside this module; a user may pass a path to their own.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._resources import suites_dir
from .._yaml import load_yaml_model
from ..errors import ConfigError
from ..personas import Persona, Utterance, load_personas, load_utterances
from ..rubrics import Rubric, load_rubric


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    ignore_eos: bool = Field(False, description="vLLM only: always generate max_tokens (for benchmarks)")

    def request_fields(self) -> dict:
        """The fields for an OpenAI-compatible request; vLLM's extension only when asked for."""
        return self.model_dump(exclude=set() if self.ignore_eos else {"ignore_eos"})


class SuiteSampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    therapist: SamplingParams = SamplingParams()
    client: SamplingParams = SamplingParams(temperature=0.8, max_tokens=160)


class GateDefaults(BaseModel):
    """What `evalkit gate` checks for this suite unless told otherwise."""

    model_config = ConfigDict(extra="forbid")

    metrics: dict[str, float] = Field(description="metric -> non-inferiority margin, in the metric's own units")
    critical: list[str] = Field([], description="rubrics whose critical failures the candidate may not add")
    alpha: float = Field(0.05, gt=0, lt=0.5)
    power: float = Field(0.8, gt=0, lt=1)
    max_invalid_rate: float = Field(0.05, ge=0, le=1)


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    version: str
    description: str
    unit: Literal["session", "response"]
    rubrics: list[str] = Field(min_length=1, description="built-in rubric ids, or YAML paths relative to the suite file")
    personas: Literal["all", "risk"] | list[str] = Field("all", description="all, risk (every persona with a risk), or ids")
    persona_dir: str | None = Field(None, description="a folder of persona YAMLs, relative to the suite file (default: built-in)")
    utterances: Literal["all"] | list[str] = "all"
    utterances_file: str | None = Field(None, description="an utterances YAML or folder of them, relative to the suite file (default: built-in)")
    turns: int = Field(6, ge=1, description="therapist turns per session")
    therapist_system_prompt: str
    sampling: SuiteSampling = SuiteSampling()
    gate: GateDefaults | None = None

    @model_validator(mode="after")
    def _unit_fits(self) -> Suite:
        if self.unit == "response":
            self.turns = 1
        return self


@dataclass(frozen=True)
class Case:
    """One unit of work: a session with a persona, or one response to an utterance."""

    session_id: str
    replicate: int
    persona: Persona | None = None
    utterance: Utterance | None = None

    @property
    def source_id(self) -> str:
        return self.persona.id if self.persona else self.utterance.id  # type: ignore[union-attr]


@dataclass(frozen=True)
class LoadedSuite:
    suite: Suite
    path: Path
    rubrics: list[Rubric]
    personas: list[Persona]
    utterances: list[Utterance]

    @property
    def sources(self) -> list[Persona] | list[Utterance]:
        return self.personas if self.suite.unit == "session" else self.utterances

    def cases(self, n: int | None = None) -> list[Case]:
        """`n` cases, cycling through personas/utterances; replicate counts the cycles."""
        sources = self.sources
        n = len(sources) if n is None else n
        cases = []
        for i in range(n):
            source, replicate = sources[i % len(sources)], i // len(sources)
            kind = {"persona": source} if self.suite.unit == "session" else {"utterance": source}
            cases.append(Case(session_id=f"{source.id}#{replicate}", replicate=replicate, **kind))
        return cases

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256(self.suite.model_dump_json().encode())
        for part in [*self.rubrics, *self.sources]:
            digest.update(part.model_dump_json().encode())
        return digest.hexdigest()


def available_suites() -> list[str]:
    return sorted(p.stem for p in suites_dir().glob("*.yaml"))


def _select(kind: str, wanted: str | list[str], have: list, path: Path) -> list:
    if wanted == "all":
        return have
    if wanted == "risk":
        return [p for p in have if p.risk_level != "none"]
    by_id = {x.id: x for x in have}
    missing = [w for w in wanted if w not in by_id]
    if missing:
        raise ConfigError(f"{path}: field '{kind}': unknown {kind} {', '.join(missing)}")
    return [by_id[w] for w in wanted]


def load_suite(name_or_path: str) -> LoadedSuite:
    """A built-in suite by id, or a suite YAML by path, with its rubrics and clients loaded."""
    path = Path(name_or_path)
    if not (path.suffix in {".yaml", ".yml"} or path.exists()):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", name_or_path) or not (suites_dir() / f"{name_or_path}.yaml").exists():
            raise ConfigError(f"unknown suite '{name_or_path}' (available: {', '.join(available_suites())}; or give a suite YAML path)")
        path = suites_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: suite file does not exist")
    suite = load_yaml_model(path, Suite)
    rubrics = []
    for rubric_id in suite.rubrics:
        relative = path.parent / rubric_id
        try:
            rubric = load_rubric(str(relative) if relative.suffix in {".yaml", ".yml"} else rubric_id)
        except ConfigError as exc:
            if str(exc).startswith("unknown rubric"):
                raise ConfigError(f"{path}: field 'rubrics': {exc}") from None
            raise
        expected = "transcript" if suite.unit == "session" else "response"
        if rubric.unit != expected:
            raise ConfigError(f"{path}: field 'rubrics': rubric '{rubric.id}' rates a {rubric.unit}, but this suite's unit is '{suite.unit}'")
        rubrics.append(rubric)
    personas: list[Persona] = []
    utterances: list[Utterance] = []
    if suite.unit == "session":
        persona_dir = path.parent / suite.persona_dir if suite.persona_dir else None
        personas = _select("personas", suite.personas, load_personas(persona_dir), path)
    else:
        utterances_file = path.parent / suite.utterances_file if suite.utterances_file else None
        utterances = _select("utterances", suite.utterances, load_utterances(utterances_file), path)
    return LoadedSuite(suite=suite, path=path, rubrics=rubrics, personas=personas, utterances=utterances)
