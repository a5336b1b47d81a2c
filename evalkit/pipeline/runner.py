"""`evalkit run` as Python: suite -> sessions -> transcripts -> scorers -> scores -> summary, each a stage.

`evaluate(spec)` composes the stages for one run; `rescore(run, ...)` re-judges a stored run's transcripts
into a new run; `run(...)`/`run_async(...)` take keyword arguments for notebooks. The library prints
nothing: it reports through a `Reporter` and raises `EvalkitError` subclasses that name fields; what
finished is always on disk and a re-run resumes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evalkit.analysis.summary import SessionFacts, summarise
from evalkit.backends.base import Backend, BuildContext
from evalkit.backends.roles import Role, RoleBackends, resolve_roles, self_play_warnings
from evalkit.content.suites import LoadedSuite, load_suite, schedule_problems
from evalkit.core.concurrency import run_bounded
from evalkit.core.errors import BackendUnavailable, ConfigError, EvalkitError, RunInterrupted, StorageError
from evalkit.core.progress import Reporter
from evalkit.core.provenance import git_commit, host_info
from evalkit.core.types import ROLES, SamplingParams
from evalkit.core.version import __version__
from evalkit.judging import Judge, JudgeSettings, RubricScorer, Scorer, make_scorer
from evalkit.judging.adherence import AdherenceScorer
from evalkit.judging.safety import RiskSurfacedScorer
from evalkit.pipeline.spec import EvalSpec, RoleConfig
from evalkit.simulation.client_modes import ReplayClient, ScriptedClient, SimulatedClient
from evalkit.simulation.engine import SessionEngine
from evalkit.store.records import ContentRef, Manifest, RoleRecord, RunConfig, RunCounts, Summary, Transcript
from evalkit.store.rundir import RunDir, ScoreValue


@dataclass
class RunResult:
    directory: Path
    manifest: Manifest
    summary: Summary


# ---------------------------------------------------------------- planning

@dataclass
class ScoringPlan:
    """The scorers of a run and the rows each session must end up with."""

    scorers: list[Scorer]
    suite: LoadedSuite

    @classmethod
    def of(cls, loaded: LoadedSuite, settings: JudgeSettings, *, simulated_client: bool,
           options: dict[str, Any] | None = None) -> ScoringPlan:
        """`options`: run-level settings for the scorers that take them (emotion_model, reward_endpoint, ...)."""
        options = options or {}
        scorers: list[Scorer] = [make_scorer(use.scorer, loaded, rubric, **options) if use.scorer else
                                 RubricScorer(rubric, applies_to=use.applies_to, layout=settings.layout)
                                 for use, rubric in loaded.rubric_uses]
        if loaded.suite.unit == "session":
            if any(r.critical_items for r in loaded.rubrics):
                scorers.append(RiskSurfacedScorer())
            if settings.adherence_threshold is not None and simulated_client:
                scorers.append(AdherenceScorer())
        scorers += [make_scorer(name, loaded, **options) for name in loaded.suite.scorers]
        return cls(scorers=scorers, suite=loaded)

    @property
    def uses_judge(self) -> bool:
        return any(getattr(s, "uses_judge", True) for s in self.scorers)

    def expected(self, transcript: Transcript) -> dict[Scorer, set[tuple[str, str]]]:
        source = self.suite.source(transcript.source_id)
        return {s: {(s.id, k) for k in s.keys(transcript, source)} for s in self.scorers}

    def describe(self) -> list[str]:
        """Each scorer's id/version, and where it reads from when that is not the judge (e.g. a reward server)."""
        return [f"{s.id}/{s.version}" + (f"@{s.provenance}" if getattr(s, "provenance", None) else "") for s in self.scorers]

    async def aclose(self) -> None:
        """Close what scorers opened (e.g. a reward server connection)."""
        for scorer in self.scorers:
            if hasattr(scorer, "aclose"):
                await scorer.aclose()


def _sampling(loaded: LoadedSuite, spec: EvalSpec) -> dict[str, SamplingParams]:
    therapist = loaded.suite.sampling.therapist.model_copy(update={k: v for k, v in {
        "max_tokens": spec.max_tokens, "temperature": spec.temperature, "top_p": spec.top_p, "seed": spec.seed}.items() if v is not None})
    client = loaded.suite.sampling.client.model_copy(update={k: v for k, v in {
        "max_tokens": spec.max_tokens, "seed": spec.seed}.items() if v is not None})
    return {"therapist": therapist, "client": client}


def _config(loaded: LoadedSuite, roles: dict[str, Role], turns: int, sampling: dict[str, SamplingParams],
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


def _judge_validation(path: Path, judge_identity: str) -> dict:
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


def _role_record(role: Role, sampling: dict[str, SamplingParams]) -> RoleRecord:
    info = role.backend.info.model_dump()  # type: ignore[union-attr]
    if role.kind != "openai":
        info["endpoint"] = None  # a managed server's loopback port means nothing after the run
    params = sampling.get(role.name)
    seed_sent = None
    if params is not None and params.seed is not None:
        seed_sent = bool(getattr(getattr(role.backend, "backend", role.backend), "send_seed", True))
    return RoleRecord(**info, defaulted_to_therapist=role.defaulted, identity=role.identity, seed_sent=seed_sent)


# ---------------------------------------------------------------- stages

async def simulate(loaded: LoadedSuite, store: RunDir, cases: list, *, therapist: Backend, client, turns: int,
                   sampling: SamplingParams, concurrency: int, reporter: Reporter) -> None:
    """Run every case that has no transcript yet; each transcript is appended as soon as its session ends."""
    done = set(store.sources())
    reporter.sessions(len(cases), sum(c.session_id in done for c in cases))
    engine = SessionEngine(suite_id=loaded.suite.id, system_prompt=loaded.suite.therapist_system_prompt, turns=turns,
                           therapist=therapist, client=client, therapist_sampling=sampling, reporter=reporter,
                           formulation=loaded.wants_formulation)

    def keep(case, transcript: Transcript) -> None:
        store.append_transcript(transcript)
        reporter.session_done(transcript)

    await run_bounded((c for c in cases if c.session_id not in done), engine.run_case, concurrency=concurrency, on_result=keep)


async def score(store: RunDir, plan: ScoringPlan, judge: Judge, *, concurrency: int, reporter: Reporter,
                rejudge_invalid: bool = False) -> None:
    """Write every expected row that is missing (and, when asked, re-ask every invalid one). The latest row wins."""
    written = store.written_keys()

    def todo(transcript: Transcript) -> dict[Scorer, set[tuple[str, str]]]:
        have = written.get(transcript.session_id, {})
        wanted = {}
        for scorer, keys in plan.expected(transcript).items():
            need = {k for k in keys if k not in have or (rejudge_invalid and not have[k])}
            if need:
                wanted[scorer] = need
        return wanted

    total = done = 0
    for transcript in store.iter_transcripts():
        for keys in plan.expected(transcript).values():
            total += len(keys)
            done += sum(k in written.get(transcript.session_id, {}) and (written[transcript.session_id][k] or not rejudge_invalid) for k in keys)
    reporter.scoring(total, done)

    def pending() -> Iterator[tuple[Transcript, dict]]:
        for transcript in store.iter_transcripts():
            wanted = todo(transcript)
            if wanted:
                yield transcript, wanted

    async def work(job: tuple[Transcript, dict]) -> list:
        transcript, wanted = job
        source = plan.suite.source(transcript.source_id)
        from evalkit.backends.replicas import routing_key

        with routing_key(transcript.session_id):  # one replica's prefix cache holds the shared transcript
            results = await asyncio.gather(*(scorer.score(transcript, source, judge, only={item for _, item in keys})
                                             for scorer, keys in wanted.items()))
        return [row for scorer, rows in zip(wanted, results, strict=True) for row in rows
                if (row.rubric, row.item) in wanted[scorer]]

    def keep(job, rows: list) -> None:
        store.append_scores(rows)
        reporter.rows_scored(len(rows))

    try:
        await run_bounded(pending(), work, concurrency=concurrency, on_result=keep)
    finally:
        await plan.aclose()


def count(store: RunDir, plan: ScoringPlan, values: dict[str, list[ScoreValue]]) -> tuple[RunCounts, dict[str, SessionFacts]]:
    """What the run directory holds (`values`: its latest score rows), the single source of the manifest's and the
    summary's counts."""
    written = {sid: {(v.rubric, v.item): v.valid for v in rows} for sid, rows in values.items()}
    counts = RunCounts()
    facts: dict[str, SessionFacts] = {}
    for transcript in store.iter_transcripts():
        have = written.get(transcript.session_id, {})
        expected = set().union(*plan.expected(transcript).values())
        missing = len(expected - set(have))
        counts.sessions += 1
        counts.sessions_scored += missing == 0
        counts.missing_score_rows += missing
        counts.truncated_sessions += transcript.truncated
        reasoning = sum(t.reasoning is not None for t in transcript.turns)
        counts.reasoning_turns += reasoning
        facts[transcript.session_id] = SessionFacts(transcript.source_id, transcript.truncated, reasoning)
    for rows in written.values():
        counts.score_rows += len(rows)
        counts.invalid_score_rows += sum(not valid for valid in rows.values())
    return counts, facts


def summarise_run(store: RunDir, plan: ScoringPlan, settings: JudgeSettings, *, include_flagged: bool) -> Summary:
    values = store.score_values()
    counts, facts = count(store, plan, values)
    loaded = plan.suite
    summary = summarise(store.name, loaded.suite.id, [(r, loaded.applies_to(r.id)) for r in loaded.rubrics], facts,
                        values, counts, adherence_threshold=settings.adherence_threshold,
                        include_flagged=include_flagged, exclude_truncated=loaded.suite.exclude_truncated)
    summary.counts.flagged_sessions = len(summary.adherence.flagged) if summary.adherence else 0
    if any(s.id == "reference" for s in plan.scorers):
        summary.reference = _reference_summary(store, plan, values)
    store.write_summary(summary)
    from evalkit.analysis.tables import write_tables

    write_tables(store.directory)
    return summary


def _reference_summary(store: RunDir, plan: ScoringPlan, values) -> Any:
    from evalkit.judging.reference import ReferenceScorer, corpus_summary, reply_of

    scorer = next(s for s in plan.scorers if isinstance(s, ReferenceScorer))
    pairs = []
    for transcript in store.iter_transcripts():
        reply, item = reply_of(transcript), plan.suite.source(transcript.source_id)
        if reply is not None and item is not None:
            pairs.append((reply, item.reply))
    emotion = [v.expected for rows in values.values() for v in rows
               if v.rubric == "reference" and v.item == "emotion" and v.valid and v.expected is not None]
    return corpus_summary(pairs, emotion, scorer.label_map, str(scorer.emotion_model) if scorer.emotion_model else None)


# ---------------------------------------------------------------- one run

@dataclass
class _Prepared:
    spec: EvalSpec
    loaded: LoadedSuite
    cases: list
    turns: int
    sampling: dict[str, SamplingParams]
    settings: JudgeSettings
    warnings: list[str] = field(default_factory=list)


def prepare(spec: EvalSpec, reporter: Reporter | None = None) -> _Prepared:
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
    return _Prepared(spec=spec, loaded=loaded, cases=loaded.cases(spec.sessions), turns=turns, sampling=_sampling(loaded, spec),
                     settings=settings, warnings=warnings)


async def evaluate(spec: EvalSpec, *, backends: dict[str, Backend] | None = None, reporter: Reporter | None = None,
                   command: list[str] | None = None) -> RunResult:
    """Simulate the suite's sessions against the therapist model, score them, and write the run directory.

    `backends`: ready backend objects for any role (they override the spec's model/endpoint for that role).
    Use inside a running event loop (a notebook); `run` is the same for plain scripts.
    """
    reporter = reporter or Reporter()
    prepared = prepare(spec, reporter)
    if spec.lora:
        raise ConfigError("lora: use evaluate_many (evalkit run with --lora) to evaluate several adapters")
    return await _evaluate(prepared, backends or {}, reporter, command or sys.argv)


def _specs(spec: EvalSpec, backends: dict[str, Backend], session: bool) -> dict:
    from evalkit.backends.roles import RoleSpec

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


async def _evaluate(prepared: _Prepared, instances: dict[str, Backend], reporter: Reporter, command: list[str],
                    context: BuildContext | None = None) -> RunResult:
    spec, loaded = prepared.spec, prepared.loaded
    session = loaded.suite.unit == "session"
    roles = resolve_roles(_specs(spec, instances, session))
    client_source = (ReplayClient(Path(spec.replay_client)) if spec.replay_client
                     else ScriptedClient(Path(spec.scripted_client), list({c.persona.id: c.persona for c in prepared.cases}.values()))
                     if spec.scripted_client else None)
    plan = ScoringPlan.of(loaded, prepared.settings, simulated_client=not isinstance(client_source, ScriptedClient),
                          options={"emotion_model": spec.emotion_model, "emotion_labels": spec.emotion_labels,
                                   "reward_endpoint": spec.reward_endpoint})
    staging = Path(spec.out or Path("results") / ".starting")
    owned_context = context is None
    context = context or BuildContext(log_dir=staging, max_model_len=spec.max_model_len, vllm_args=list(spec.vllm_args),
                                      trust_remote_code=spec.trust_remote_code, reasoning_parser=spec.reasoning_parser)
    backends = RoleBackends(context)
    store: RunDir | None = None
    manifest: Manifest | None = None
    try:
        # Endpoints are cheap to check and name their model, which the configuration needs; local models are
        # hashed already. Managed servers start only once the directory is known to accept the run.
        for role in roles.values():
            if role.kind in ("openai", "mock") or role.spec.instance is not None:
                await backends.bind(role)
        self_play, self_judged, role_warnings = self_play_warnings(roles, has_client=session and client_source is None,
                                                                   has_judge=plan.uses_judge)
        client_mode = client_source.mode if client_source else "simulated"
        config = _config(loaded, roles, prepared.turns, prepared.sampling, prepared.settings, plan, client_mode, spec.seed)
        if spec.emotion_model is not None:
            from evalkit.core.provenance import hash_model_dir

            emotion_dir = Path(spec.emotion_model)
            if not (emotion_dir / "config.json").is_file():
                raise ConfigError(f"emotion_model {emotion_dir}: not a model folder (no config.json)")
            config.emotion_model, config.emotion_labels = hash_model_dir(emotion_dir), dict(spec.emotion_labels)
        therapist = roles["therapist"]
        model_name = therapist.spec.model or (therapist.backend.info.model if therapist.backend else None)
        directory = Path(spec.out or default_run_dir(loaded.suite.id, model_name, config))
        validation = _judge_validation(Path(spec.judge_validation), config.roles["judge"]) if spec.judge_validation else None
        store = RunDir(directory)
        previous = store.prepare(config, resume=spec.resume)
        context.log_dir = directory
        warnings = [*prepared.warnings, *role_warnings]
        for warning in warnings:
            reporter.warn(warning)
        for role in roles.values():
            if role.backend is None:
                await backends.bind(role)
        if previous is None:
            store.write_inputs(loaded)
        manifest = Manifest(
            evalkit_version=__version__, run_id=directory.name, status="running", command=command, git_commit=git_commit(),
            config=config, config_sha256=hashlib.sha256(config.model_dump_json().encode()).hexdigest(),
            roles={name: _role_record(role, prepared.sampling) for name, role in roles.items()},
            self_play=self_play, self_judged=self_judged,
            sessions_requested=max(len(prepared.cases), previous.sessions_requested if previous else 0),
            started_at=previous.started_at if previous else datetime.now(timezone.utc),
            host=host_info(), warnings=warnings, judge_validation=validation)
        store.write_manifest(manifest)
        if session:
            simulated = SimulatedClient(roles["client"].backend, prepared.sampling["client"])
            if isinstance(client_source, ReplayClient):
                client_source.fallback = simulated
            await simulate(loaded, store, prepared.cases, therapist=roles["therapist"].backend, client=client_source or simulated,
                           turns=prepared.turns, sampling=prepared.sampling["therapist"], concurrency=spec.concurrency, reporter=reporter)
        else:  # single responses and reference items
            await simulate(loaded, store, prepared.cases, therapist=roles["therapist"].backend, client=None, turns=1,
                           sampling=prepared.sampling["therapist"], concurrency=spec.concurrency, reporter=reporter)
        judge = Judge(roles["judge"].backend, prepared.settings, concurrency=spec.judge_concurrency)
        await score(store, plan, judge, concurrency=spec.concurrency, reporter=reporter, rejudge_invalid=spec.rejudge_invalid)
        summary = summarise_run(store, plan, prepared.settings, include_flagged=spec.include_flagged)
        manifest = _finish(store, manifest, "complete", roles, summary.counts)
    except BackendUnavailable as exc:
        if manifest and store:
            _finish(store, manifest, "interrupted", roles, None)
        why = backends.explain_failure() or str(exc)
        where = f"; {len(store.sources())} of {len(prepared.cases)} sessions are kept in {store.directory}" if store and manifest else ""
        raise RunInterrupted(f"{why}{where}; re-run the same command to continue") from None
    except StorageError as exc:
        if manifest and store:
            _finish(store, manifest, "interrupted", roles, None)
        raise RunInterrupted(f"{exc}; everything written before is intact, re-run the same command once the problem "
                             "is solved to continue") from None
    except BaseException:
        if manifest and store:
            _finish(store, manifest, "interrupted", roles, None)
        raise
    finally:
        await backends.close(stop_servers=owned_context)
        reporter.close()
    if spec.report:
        from evalkit.report import build_report

        build_report([store.directory])
    return RunResult(directory=store.directory, manifest=manifest, summary=summary)


def _finish(store: RunDir, manifest: Manifest, status: str, roles: dict[str, Role], counts: RunCounts | None) -> Manifest:
    """Write the manifest's final status (best effort when the run is failing: the original error matters more)."""
    records = {name: record.model_copy(update={"replicas": roles[name].backend.info.replicas})  # type: ignore[union-attr]
               if record.replicas and name in roles and roles[name].backend else record for name, record in manifest.roles.items()}
    update: dict[str, Any] = {"status": status, "ended_at": datetime.now(timezone.utc), "roles": records}
    if counts is not None:
        update["counts"] = counts
    finished = manifest.model_copy(update=update)
    try:
        store.write_manifest(finished, last_resort=status != "complete")
    except StorageError:
        if status == "complete":
            raise
    return finished


# ---------------------------------------------------------------- several checkpoints, rescoring

async def evaluate_many(specs: list[EvalSpec], *, reporter: Reporter | None = None,
                        command: list[str] | None = None) -> list[RunResult]:
    """Several runs, one after another: each spec, and for a spec with `lora`, each adapter of its base model,
    all served by one managed vLLM server (`--enable-lora`), each into its own run directory."""
    reporter = reporter or Reporter()
    results = []
    for spec in specs:
        if not spec.lora:
            results.append(await evaluate(spec, reporter=reporter, command=command))
            continue
        results += await _evaluate_adapters(spec, reporter, command or sys.argv)
    return results


async def _evaluate_adapters(spec: EvalSpec, reporter: Reporter, command: list[str]) -> list[RunResult]:
    from evalkit.backends.base import BackendSpec, build_backend
    from evalkit.backends.openai_http import OpenAIBackend
    from evalkit.backends.roles import check_model_path
    from evalkit.core.provenance import hash_model_dir

    base_model = spec.therapist.model
    if not base_model or spec.therapist.backend not in ("auto", "vllm"):
        raise ConfigError("lora: give the base model's local path as the therapist model (served by a managed vLLM server)")
    base = check_model_path(base_model, "therapist model")
    if base is None:
        raise ConfigError("lora: the base model must be a local folder")
    adapters = {}
    for name, path in spec.lora.items():
        folder = Path(path).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise ConfigError(f"lora {name}={path}: not a PEFT LoRA adapter folder (no adapter_config.json)")
        adapters[name] = folder.resolve()
    base_hash = hash_model_dir(base)
    staging = Path(spec.out or "results")
    context = BuildContext(log_dir=staging, max_model_len=spec.max_model_len, vllm_args=list(spec.vllm_args),
                           trust_remote_code=spec.trust_remote_code, reasoning_parser=spec.reasoning_parser)
    server = await build_backend(BackendSpec(kind="vllm", model=str(base), model_hash=base_hash,
                                             options={"lora_modules": {n: str(p) for n, p in adapters.items()}}), context)
    results = []
    try:
        for name, path in adapters.items():
            adapter = await OpenAIBackend.connect(server.base_url, name, kind="vllm-lora", timeouts=server.timeouts,  # type: ignore[attr-defined]
                                                  send_seed=server.send_seed)  # type: ignore[attr-defined]
            adapter.info.model_path = str(path)
            adapter.info.model_hash = hashlib.sha256((base_hash + hash_model_dir(path)).encode()).hexdigest()
            sub = spec.model_copy(update={"lora": {}, "therapist": RoleConfig(model=name), "out": (Path(spec.out) / name) if spec.out else None})
            try:
                results.append(await _evaluate(prepare(sub, reporter), {"therapist": adapter}, reporter, command, context=context))
            finally:
                await adapter.aclose()
    finally:
        await server.aclose()
        while context.closers:
            context.closers.pop()()
    return results


async def rescore_async(source: str | Path, *, judge: RoleConfig | Backend, out: str | Path, rubrics: list[str] | None = None,
                  judge_min_mass: float = 0.5, judge_mass_check: bool = True, adherence: bool = True,
                  judge_concurrency: int = 64, concurrency: int = 16, rejudge_invalid: bool = False,
                  reporter: Reporter | None = None, command: list[str] | None = None, report: bool = True) -> RunResult:
    """Re-judge a stored run's transcripts (all its scorers, or only `rubrics`) into a new run directory.

    The new run carries the same transcripts and inputs, names the source run and the new judge in its manifest,
    and resumes like `run` when the same command is given again.
    """
    from dataclasses import replace as dc_replace

    from evalkit.backends.roles import RoleSpec

    reporter = reporter or Reporter()
    source_dir = RunDir(source)
    source_manifest = source_dir.require_manifest()
    loaded = source_dir.suite()
    if rubrics:
        unknown = sorted(set(rubrics) - {r.id for r in loaded.rubrics})
        if unknown:
            raise ConfigError(f"rubric {unknown[0]}: not a rubric of {source_dir.directory} ({', '.join(r.id for r in loaded.rubrics)})")
        keep = [(u, r) for u, r in zip(loaded.suite.rubrics, loaded.rubrics, strict=True) if r.id in rubrics]
        loaded = dc_replace(loaded, suite=loaded.suite.model_copy(update={"rubrics": [u for u, _ in keep]}), rubrics=[r for _, r in keep])
    out_dir = RunDir(out)
    if out_dir.directory.resolve() == source_dir.directory.resolve():
        raise ConfigError(f"out {out}: is the source run; rescore writes a new run directory")
    transcripts = list(source_dir.iter_transcripts())  # a corrupt source fails here, before anything is written
    session = loaded.suite.unit == "session"
    old = source_manifest.config
    settings = JudgeSettings(min_mass=judge_min_mass, check_mass=judge_mass_check,
                             adherence_threshold=(old.adherence_threshold or 0.8) if adherence and session else None)
    spec = RoleSpec(instance=judge) if not isinstance(judge, RoleConfig) else judge.role_spec()
    roles = resolve_roles({"therapist": spec})
    role = roles["therapist"]
    role.name = "judge"
    backends = RoleBackends(BuildContext(log_dir=out_dir.directory))
    # A reward scorer reads the same reward server the source run recorded ("reward/1@URL").
    reward = next((d.split("@", 1)[1] for d in old.scorers if d.startswith("reward/") and "@" in d), None)
    plan = ScoringPlan.of(loaded, settings, simulated_client=not old.client_mode.startswith("scripted"),
                          options={"reward_endpoint": reward})
    manifest = None
    try:
        await backends.bind(role)
        config = old.model_copy(update={"rubrics": [ContentRef(id=r.id, version=r.version, sha256=r.content_hash) for r in loaded.rubrics],
                                        "scorers": plan.describe(), "judge_method": settings.method,
                                        "adherence_threshold": settings.adherence_threshold,
                                        "roles": {**old.roles, "judge": role.identity}})
        previous = out_dir.prepare(config, resume=False)
        if previous is None:
            out_dir.write_inputs(loaded)
            from evalkit.core.fileio import append_lines

            append_lines(out_dir.path("transcripts.jsonl"), [t.model_dump_json() for t in transcripts])
        judge_record = RoleRecord(**role.backend.info.model_dump(), identity=role.identity)  # type: ignore[union-attr]
        therapist = source_manifest.roles["therapist"].identity or old.roles["therapist"]
        manifest = source_manifest.model_copy(update={
            "evalkit_version": __version__, "run_id": out_dir.name, "status": "running", "command": command or sys.argv,
            "git_commit": git_commit(), "config": config, "config_sha256": hashlib.sha256(config.model_dump_json().encode()).hexdigest(),
            "roles": {**source_manifest.roles, "judge": judge_record}, "self_judged": role.identity == therapist,
            "started_at": previous.started_at if previous else datetime.now(timezone.utc), "ended_at": None,
            "host": host_info(), "rescored_from": str(source_dir.directory.resolve()), "judge_validation": None})
        out_dir.write_manifest(manifest)
        await score(out_dir, plan, Judge(role.backend, settings, concurrency=judge_concurrency), concurrency=concurrency,  # type: ignore[arg-type]
                    reporter=reporter, rejudge_invalid=rejudge_invalid)
        summary = summarise_run(out_dir, plan, settings, include_flagged=False)
        manifest = _finish(out_dir, manifest, "complete", roles, summary.counts)
    except BaseException:
        if manifest is not None:
            _finish(out_dir, manifest, "interrupted", roles, None)
        raise
    finally:
        await backends.close()
        reporter.close()
    if report:
        from evalkit.report import build_report

        build_report([out_dir.directory])
    return RunResult(directory=out_dir.directory, manifest=manifest, summary=summary)


# ---------------------------------------------------------------- convenience forms

_ROLE_KEYS = {"model", "endpoint", "api_key_env", "backend"}


def spec_from_kwargs(model: str | None = None, suite: str = "act-fm", **kwargs: Any) -> tuple[EvalSpec, dict[str, Backend]]:
    """`run(model, suite, endpoint=..., client=RoleSpec|Backend|dict, judge=..., sessions=...)` as an EvalSpec."""
    from evalkit.backends.roles import RoleSpec

    instances: dict[str, Backend] = {}
    fields: dict[str, Any] = {"suite": suite}
    therapist = {k: kwargs.pop(k) for k in list(kwargs) if k in _ROLE_KEYS and kwargs[k] is not None}
    if isinstance(model, str) or model is None:
        fields["therapist"] = {"model": model, **therapist}
    else:
        instances["therapist"] = model
    for name in ("client", "judge"):
        value = kwargs.pop(name, None)
        if value is None:
            continue
        if isinstance(value, RoleSpec):
            if value.instance is not None:
                instances[name] = value.instance
            else:
                fields[name] = {"model": value.model, "endpoint": list(value.endpoints), "api_key_env": value.api_key_env,
                                "backend": value.backend}
        elif isinstance(value, dict):
            fields[name] = value
        else:
            instances[name] = value
    settings = kwargs.pop("judge_settings", None)
    if settings is not None:
        fields.update(judge_min_mass=settings.min_mass, judge_mass_check=settings.check_mass,
                      adherence=settings.adherence_threshold is not None,
                      adherence_threshold=settings.adherence_threshold if settings.adherence_threshold is not None else 0.8)
    kwargs.pop("show_progress", None)
    fields.update(kwargs)
    if instances.get("therapist") is not None and "therapist" not in fields:
        fields["therapist"] = {"model": instances["therapist"].info.model, "backend": instances["therapist"].info.kind}
    elif "therapist" in instances:
        fields["therapist"] = {"model": instances["therapist"].info.model, "backend": instances["therapist"].info.kind}
    from pydantic import ValidationError

    from evalkit.core.yamlio import describe_validation_error

    try:
        return EvalSpec.model_validate(fields), instances
    except ValidationError as exc:
        raise ConfigError(describe_validation_error("run", exc)) from None


async def run_async(model: Any = None, suite: str = "act-fm", *, reporter: Reporter | None = None, **kwargs: Any) -> RunResult:
    """Keyword form of `evaluate`: `model` is a path/name or a backend object; client/judge a RoleSpec, backend or dict."""
    command = kwargs.pop("command", None)
    spec, instances = spec_from_kwargs(model, suite, **kwargs)
    return await evaluate(spec, backends=instances, reporter=reporter, command=command)


def run(model: Any = None, suite: str = "act-fm", **kwargs: Any) -> RunResult:
    """`run_async` for plain scripts (not inside a running event loop)."""
    return asyncio.run(run_async(model, suite, **kwargs))


def rescore(*args: Any, **kwargs: Any) -> RunResult:
    """`rescore_async` for plain scripts (not inside a running event loop)."""
    return asyncio.run(rescore_async(*args, **kwargs))

__all__ = ["RunResult", "ScoringPlan", "evaluate", "evaluate_many", "prepare", "rescore", "rescore_async", "run", "run_async", "score",
           "simulate", "summarise_run"]
_ = EvalkitError
