"""Everything a run needs before any model is asked anything: the suite and its cases, sampling, judge
settings, the run's configuration (its identity), the manifest's records, all validated."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.backends.base import Backend
from evalkit.backends.roles import Role, RoleSpec
from evalkit.content.suites import LoadedSuite, load_suite, schedule_problems
from evalkit.core.errors import ConfigError
from evalkit.core.types import ROLES, SamplingParams
from evalkit.judging import JudgeSettings
from evalkit.pipeline.spec import EvalSpec, RoleConfig
from evalkit.pipeline.stages import ScoringPlan
from evalkit.store.records import ContentRef, Inclusion, RoleRecord, RunConfig


@dataclass
class Prepared:
    spec: EvalSpec
    loaded: LoadedSuite
    cases: list
    turns: int
    sampling: dict[str, SamplingParams]
    settings: JudgeSettings
    warnings: list[str] = field(default_factory=list)

    @property
    def session(self) -> bool:
        return self.loaded.suite.unit == "session"

    @property
    def inclusion(self) -> Inclusion:
        return Inclusion(include_flagged=bool(self.spec.include_flagged), exclude_truncated=self.loaded.suite.exclude_truncated)


def prepare(spec: EvalSpec) -> Prepared:
    """Everything that needs no model: the suite, its cases, sampling and settings, all validated."""
    loaded = load_suite(spec.suite)
    session = loaded.suite.unit == "session"
    settings = JudgeSettings(min_mass=spec.judge_min_mass, check_mass=spec.judge_mass_check,
                             adherence_threshold=spec.adherence_threshold if spec.adherence and session else None)
    turns = loaded.suite.turns if (spec.turns is None or not session) else spec.turns
    if (spec.replay_client or spec.scripted_client) and not session:
        raise ConfigError(f"suite '{loaded.suite.id}' has no simulated client to replay or script")
    warnings = []
    if spec.turns is not None and not session:  # say so rather than drop it silently
        warnings.append(f"turns ignored: suite '{loaded.suite.id}' rates single {loaded.suite.unit}s")
    if session:
        late = schedule_problems(loaded.personas, turns)
        if late:
            warnings.append(f"{len(late)} persona disclosure(s) cannot be reached in {turns} turns, e.g. {late[0]}")
    return Prepared(spec=spec, loaded=loaded, cases=loaded.cases(spec.sessions), turns=turns, sampling=sampling(loaded, spec),
                    settings=settings, warnings=warnings)


def sampling(loaded: LoadedSuite, spec: EvalSpec) -> dict[str, SamplingParams]:
    therapist = loaded.suite.sampling.therapist.model_copy(update={k: v for k, v in {
        "max_tokens": spec.max_tokens, "temperature": spec.temperature, "top_p": spec.top_p, "seed": spec.seed}.items() if v is not None})
    client = loaded.suite.sampling.client.model_copy(update={k: v for k, v in {
        "max_tokens": spec.max_tokens, "seed": spec.seed}.items() if v is not None})
    return {"therapist": therapist, "client": client}


def run_config(loaded: LoadedSuite, roles: dict[str, Role], turns: int, sampling: dict[str, SamplingParams],
            settings: JudgeSettings, plan: ScoringPlan, client_mode: str, seed: int | None) -> RunConfig:
    suite = loaded.suite
    return RunConfig(
        suite=ContentRef(id=suite.id, version=suite.version, sha256=loaded.content_hash),
        rubrics=[ContentRef(id=r.id, version=r.version, sha256=r.content_hash) for r in loaded.rubrics],
        scorers=plan.describe(),
        clients_sha256=hashlib.sha256("".join(s.model_dump_json() for s in loaded.sources).encode()).hexdigest(),
        turns=turns,
        sampling=sampling if suite.unit == "session" else {"therapist": sampling["therapist"]},
        therapist_system_prompt_sha256=hashlib.sha256(suite.therapist_system_prompt.encode()).hexdigest(),
        roles={name: role.identity for name, role in roles.items()},
        judge_method=settings.method, adherence_threshold=settings.adherence_threshold, client_mode=client_mode, seed=seed)


def default_run_dir(suite_id: str, model: str | None, config: RunConfig) -> Path:
    """results/<suite>-<model>-<hash of the configuration>: the same command twice lands in the same run."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model or "endpoint").name).strip("-") or "model"
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:8]
    return Path("results") / f"{suite_id}-{name}-{digest}"


def judge_validation_record(path: Path, judge_identity: str) -> dict:
    """The validation report a run's judge was checked with; it must be about this very judge."""
    from evalkit.core.fileio import read_model
    from evalkit.judging.validation import ValidationReport

    try:
        report = read_model(path, ValidationReport, what="validation report")
    except ConfigError as exc:
        raise ConfigError(f"judge_validation {exc}") from None
    if report.judge.identity != judge_identity:
        raise ConfigError(f"judge_validation {path}: it validated judge {report.judge.identity}, but this run's judge is {judge_identity}")
    headline = {rubric: {c: s.judge_human.icc_a1 if s.judge_human else None for c, s in section.composites.items()}
                for rubric, section in report.rubrics.items()}
    return {"report": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "created_at": report.created_at.isoformat(), "materials": report.materials,
            "raters": len(report.raters), "icc_a1_by_composite": headline}


def judge_check_record(path: Path, judge_identity: str) -> dict:
    """The fitness check (`evalkit judge check`) a run's judge passed or failed; it must be about this very judge."""
    from evalkit.core.fileio import read_model
    from evalkit.judging.fitness import FitnessReport

    try:
        report = read_model(path, FitnessReport, what="judge check report")
    except ConfigError as exc:
        raise ConfigError(f"judge_check {exc}") from None
    if report.judge.get("identity") != judge_identity:
        raise ConfigError(f"judge_check {path}: it checked judge {report.judge.get('identity')}, but this run's judge is {judge_identity}")
    return {"report": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "created_at": report.created_at.isoformat(), "verdict": report.verdict,
            "instruments": {r: {"verdict": i.verdict, "accuracy": i.accuracy, "invalid": i.invalid, "readings": i.readings,
                                "reasons": i.reasons} for r, i in report.instruments.items()}}


def role_record(role: Role, sampling: dict[str, SamplingParams]) -> RoleRecord:
    info = role.backend.info.model_dump()  # type: ignore[union-attr]
    if role.kind != "openai":
        info["endpoint"] = None  # a managed server's loopback port means nothing after the run
    params = sampling.get(role.name)
    seed_sent = None
    if params is not None and params.seed is not None:
        seed_sent = bool(getattr(getattr(role.backend, "backend", role.backend), "send_seed", True))
    return RoleRecord(**info, defaulted_to_therapist=role.defaulted, identity=role.identity, seed_sent=seed_sent)


def role_specs(spec: EvalSpec, backends: dict[str, Backend], session: bool) -> dict:
    specs = {}
    for name in ROLES:
        config: RoleConfig = getattr(spec, name)
        if name in backends:
            specs[name] = RoleSpec(instance=backends[name])
        elif config.given:
            specs[name] = config.role_spec()
    if not session:
        specs.pop("client", None)
    return specs
