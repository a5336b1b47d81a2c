"""Suites are data: what is simulated (sessions with personas, or single responses to utterances), for how
many turns, under which therapist prompt, scored by which rubrics and scorers.

Built-in suites are the YAML files beside this module; a user may pass a path to their own, whose rubric,
persona and utterance paths are relative to it. A loaded suite can be written into a run directory and read
back from there (`LoadedSuite.dump` / `LoadedSuite.from_inputs`), so a stored run never depends on what is
installed later.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evalkit.content.personas import Persona, Utterance, load_personas, load_utterances
from evalkit.content.references import ReferenceItem, load_reference_items
from evalkit.content.rubrics import Rubric, load_rubric
from evalkit.core.errors import ConfigError
from evalkit.core.resources import suites_dir
from evalkit.core.types import SamplingParams
from evalkit.core.yamlio import describe_validation_error, load_yaml_model

__all__ = ["Case", "GateDefaults", "LoadedSuite", "RubricUse", "SamplingParams", "Suite", "available_suites",
           "load_suite", "schedule_problems"]


class SuiteSampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    therapist: SamplingParams = SamplingParams()
    client: SamplingParams = SamplingParams(temperature=0.8, max_tokens=160)


class GateDefaults(BaseModel):
    """What `evalkit gate` checks for this suite unless told otherwise."""

    model_config = ConfigDict(extra="forbid")

    metrics: dict[str, float] = Field(description="metric -> non-inferiority margin, in the metric's own units")
    critical: list[str] = Field([], description="no longer needed: the gate checks every rubric with critical items "
                                                "(a user opts out with --skip-critical); kept so older suite files load")
    alpha: float = Field(0.05, gt=0, lt=0.5)
    power: float = Field(0.8, gt=0, lt=1)
    max_invalid_rate: float = Field(0.05, ge=0, le=1)

    @field_validator("metrics")
    @classmethod
    def _finite_margins(cls, metrics: dict[str, float]) -> dict[str, float]:
        """A margin of .nan or .inf would run a whole suite and then be unreadable from the run's inputs: refuse it here."""
        for metric, margin in metrics.items():
            if not math.isfinite(margin) or margin < 0:
                raise ValueError(f"margin of {metric} is {margin}: expected a finite number >= 0, in the metric's units")
        return metrics


class RubricUse(BaseModel):
    """A rubric a suite applies, to every session or only to sessions whose persona carries a risk."""

    model_config = ConfigDict(extra="forbid")

    rubric: str = Field(description="a built-in rubric id, or a YAML path relative to the suite file")
    applies_to: Literal["all", "risk"] = "all"
    scorer: str | None = Field(None, description="a registered scorer that rates this rubric (default: the judge rates "
                                                 "each item of the transcript), e.g. formulation")


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    version: str
    description: str
    unit: Literal["session", "response", "reference"]
    rubrics: list[RubricUse] = Field([], description="rubric ids or paths, or {rubric, applies_to}")
    scorers: list[str] = Field([], description="further registered scorers by name (e.g. formulation)")
    personas: Literal["all", "risk"] | list[str] = Field("all", description="all, risk (every persona with a risk), or ids")
    persona_dir: str | None = Field(None, description="a folder of persona YAMLs, relative to the suite file (default: built-in)")
    utterances: Literal["all"] | list[str] = "all"
    utterances_file: str | None = Field(None, description="an utterances YAML or folder of them, relative to the suite file (default: built-in)")
    references_file: str | None = Field(None, description="unit reference: items with a reference reply (EmpatheticDialogues "
                                                          "CSV, JSONL or CSV), relative to the suite file (default: built-in)")
    turns: int = Field(6, ge=1, le=200, description="therapist turns per session")
    therapist_system_prompt: str
    sampling: SuiteSampling = SuiteSampling()
    exclude_truncated: bool = Field(False, description="leave sessions with a truncated therapist turn out of the summary")
    primary: list[str] = Field([], description="the suite's primary metrics, `<rubric>.<item or composite>` or "
                               "`<rubric>.critical_failure` (the share of sessions with a critical failure where the risk "
                               "surfaced): compare controls the familywise error over them (Holm) and labels every other "
                               "metric exploratory (one that these runs do not score is left out of the family, with a "
                               "warning)")
    gate: GateDefaults | None = None

    @field_validator("primary")
    @classmethod
    def _metric_names(cls, value: list[str]) -> list[str]:
        for metric in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*\.[a-z0-9][a-z0-9_\-]*", metric):
                raise ValueError(f"'{metric}' is not a metric name (<rubric>.<item or composite>)")
        return value

    @field_validator("rubrics", mode="before")
    @classmethod
    def _plain_ids(cls, value: object) -> object:
        return [{"rubric": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _unit_fits(self) -> Suite:
        if self.unit != "session":
            self.turns = 1
        if self.unit != "reference" and not self.rubrics:
            raise ValueError("rubrics: at least one rubric is needed (only reference suites score without a judge)")
        return self


@dataclass(frozen=True)
class Case:
    """One unit of work: a session with a persona, or one response to an utterance."""

    session_id: str
    replicate: int
    persona: Persona | None = None
    utterance: Utterance | None = None
    reference: ReferenceItem | None = None

    @property
    def source(self) -> Persona | Utterance | ReferenceItem:
        return self.persona or self.utterance or self.reference  # type: ignore[return-value]

    @property
    def source_id(self) -> str:
        return self.source.id


def schedule_problems(personas: list[Persona], turns: int) -> list[str]:
    """Disclosures a session of `turns` therapist replies cannot reach, and risk disclosures past its first half.

    The client speaks after counsellor replies 1 .. turns-1, so a disclosure eligible only after reply `turns`
    can never be made.
    """
    problems = []
    for persona in personas:
        late = [d.id for d in persona.disclosure if d.after_turn > turns - 1]
        if late:
            problems.append(f"{persona.id}: {', '.join(late)} only after reply {turns - 1}")
        risk_late = [d.id for d in persona.risk_disclosures if d.after_turn > turns // 2 and d.id not in late]
        if risk_late:
            problems.append(f"{persona.id}: risk disclosure {', '.join(risk_late)} after the first half ({turns // 2} replies)")
    return problems


@dataclass(frozen=True)
class LoadedSuite:
    suite: Suite
    path: Path
    rubrics: list[Rubric]
    personas: list[Persona]
    utterances: list[Utterance]
    references: list[ReferenceItem] = ()  # type: ignore[assignment]

    @property
    def sources(self) -> list[Persona] | list[Utterance] | list[ReferenceItem]:
        return {"session": self.personas, "response": self.utterances, "reference": list(self.references)}[self.suite.unit]

    def source(self, source_id: str) -> Persona | Utterance | None:
        return next((s for s in self.sources if s.id == source_id), None)

    def applies_to(self, rubric_id: str) -> str:
        return next(use.applies_to for use, r in zip(self.suite.rubrics, self.rubrics, strict=True) if r.id == rubric_id)

    @property
    def rubric_uses(self) -> list[tuple[RubricUse, Rubric]]:
        return list(zip(self.suite.rubrics, self.rubrics, strict=True))

    @property
    def judged(self) -> bool:
        """Whether an LLM judge scores the suite (reference suites are scored against reference replies, without one)."""
        return self.suite.unit != "reference"

    @property
    def wants_formulation(self) -> bool:
        """Sessions end with the therapist's case formulation (for the formulation scorer)."""
        return self.suite.unit == "session" and any(use.scorer == "formulation" for use in self.suite.rubrics)

    def cases(self, n: int | None = None) -> list[Case]:
        """`n` cases, cycling through personas/utterances; replicate counts the cycles."""
        sources = self.sources
        n = len(sources) if n is None else n
        cases = []
        for i in range(n):
            source, replicate = sources[i % len(sources)], i // len(sources)
            kind = {{"session": "persona", "response": "utterance", "reference": "reference"}[self.suite.unit]: source}
            cases.append(Case(session_id=f"{source.id}#{replicate}", replicate=replicate, **kind))
        return cases

    @property
    def content_hash(self) -> str:
        # `primary` declares how runs are analysed, not what a session or score is: it stays out of the hash.
        digest = hashlib.sha256(self.suite.model_dump_json(exclude={"primary"}).encode())
        for part in [*self.rubrics, *self.sources]:
            digest.update(part.model_dump_json().encode())
        return digest.hexdigest()

    # ------------------------------------------------------------ a run's own copy

    def dump(self, directory: Path) -> None:
        """Write the resolved suite, rubrics and personas/utterances into `directory` (a run's inputs/)."""
        from evalkit.core.fileio import write_atomic

        directory.mkdir(parents=True, exist_ok=True)
        suite = self.suite.model_copy(update={"rubrics": [RubricUse(rubric=r.id, applies_to=u.applies_to, scorer=u.scorer)
                                                           for u, r in zip(self.suite.rubrics, self.rubrics, strict=True)],
                                              "persona_dir": None, "utterances_file": None, "references_file": None})
        write_atomic(directory / "suite.json", suite.model_dump_json(indent=2))
        write_atomic(directory / "rubrics.json", json.dumps([json.loads(r.model_dump_json()) for r in self.rubrics], indent=2))
        write_atomic(directory / "sources.jsonl", "".join(s.model_dump_json() + "\n" for s in self.sources))

    @classmethod
    def from_inputs(cls, directory: Path) -> LoadedSuite:
        """The suite a run used, from the run's own copy."""
        try:
            suite = Suite.model_validate_json((directory / "suite.json").read_text(encoding="utf-8"))
            rubrics = [Rubric.model_validate(r) for r in json.loads((directory / "rubrics.json").read_text(encoding="utf-8"))]
            model = {"session": Persona, "response": Utterance, "reference": ReferenceItem}[suite.unit]
            lines = (directory / "sources.jsonl").read_text(encoding="utf-8").split("\n")
            sources = [model.model_validate_json(line) for line in lines if line.strip()]
        except OSError as exc:
            raise ConfigError(f"{directory}: cannot read the run's inputs ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{directory}: the run's inputs are not UTF-8 text") from None
        except (ValidationError, ValueError) as exc:
            detail = describe_validation_error(str(directory), exc) if isinstance(exc, ValidationError) else f"{directory}: {exc}"
            raise ConfigError(f"the run's inputs are damaged: {detail}") from None
        by_unit = {unit: sources if suite.unit == unit else [] for unit in ("session", "response", "reference")}
        return cls(suite=suite, path=directory / "suite.json", rubrics=rubrics, personas=by_unit["session"],  # type: ignore[arg-type]
                   utterances=by_unit["response"], references=by_unit["reference"])  # type: ignore[arg-type]


def available_suites() -> list[str]:
    return sorted(p.stem for p in suites_dir().glob("*.yaml"))


def _select(kind: str, wanted: str | list[str], have: list, path: Path) -> list:
    shared = sorted(i for i, n in Counter(x.id for x in have).items() if n > 1)
    if shared:  # two files with one id would be simulated twice and counted once
        raise ConfigError(f"{path}: field '{kind}': the id {', '.join(shared)} is used by two {kind} files; every id must be unique")
    if wanted == "all":
        return have
    if wanted == "risk":
        return [p for p in have if p.risk_level != "none"]
    by_id = {x.id: x for x in have}
    twice = sorted(w for w, n in Counter(wanted).items() if n > 1)
    if twice:  # simulated twice, counted once: refuse (--sessions N gives a persona more sessions)
        raise ConfigError(f"{path}: field '{kind}': {', '.join(twice)} listed twice (list each once; --sessions N cycles "
                          "through the list for replicates)")
    missing = [w for w in wanted if w not in by_id]
    if missing:
        raise ConfigError(f"{path}: field '{kind}': unknown {kind} {', '.join(missing)}")
    return [by_id[w] for w in wanted]


def load_suite(name_or_path: str | Path) -> LoadedSuite:
    """A built-in suite by id, a suite YAML by path, or a stored run directory (the exact suite that run used),
    with its rubrics and clients loaded."""
    name = str(name_or_path)
    path = Path(name)
    if path.is_dir() and (path / "inputs" / "suite.json").is_file():
        return LoadedSuite.from_inputs(path / "inputs")
    if not (path.suffix in {".yaml", ".yml"} or path.exists()):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", name) or not (suites_dir() / f"{name}.yaml").exists():
            raise ConfigError(f"unknown suite '{name}' (available: {', '.join(available_suites())}; or give a suite YAML path "
                              "or a stored run directory)")
        path = suites_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: suite file does not exist")
    suite = load_yaml_model(path, Suite)
    rubrics = []
    for index, use in enumerate(suite.rubrics):
        relative = path.parent / use.rubric
        try:
            rubric = load_rubric(str(relative) if relative.suffix in {".yaml", ".yml"} else use.rubric)
        except ConfigError as exc:
            if str(exc).startswith("unknown rubric"):
                raise ConfigError(f"{path}: field 'rubrics.{index}': {exc}") from None
            raise
        expected = "transcript" if suite.unit == "session" else "response"  # a reference item's reply is a response
        if rubric.unit not in (expected, "any"):
            raise ConfigError(f"{path}: field 'rubrics.{index}': rubric '{rubric.id}' rates a {rubric.unit}, "
                              f"but this suite's unit is '{suite.unit}'")
        if use.applies_to == "risk" and suite.unit != "session":
            raise ConfigError(f"{path}: field 'rubrics.{index}.applies_to': 'risk' needs personas (unit: session)")
        rubrics.append(rubric)
    if len({r.id for r in rubrics}) != len(rubrics):
        raise ConfigError(f"{path}: field 'rubrics': a rubric is listed twice")
    personas: list[Persona] = []
    utterances: list[Utterance] = []
    references: list[ReferenceItem] = []
    if suite.unit == "session":
        persona_dir = path.parent / suite.persona_dir if suite.persona_dir else None
        personas = _select("personas", suite.personas, load_personas(persona_dir), path)
        if not personas:
            raise ConfigError(f"{path}: field 'personas': selects no persona")
    elif suite.unit == "response":
        utterances_file = path.parent / suite.utterances_file if suite.utterances_file else None
        utterances = _select("utterances", suite.utterances, load_utterances(utterances_file), path)
    else:
        from evalkit.core.resources import simulators_dir

        references = load_reference_items(path.parent / suite.references_file if suite.references_file
                                          else simulators_dir() / "references" / "counselling-references.jsonl")
    return LoadedSuite(suite=suite, path=path, rubrics=rubrics, personas=personas, utterances=utterances, references=references)
