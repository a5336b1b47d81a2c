"""`evalkit run` as a Python function: suite -> sessions -> transcripts -> judge -> scores -> summary."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rich.markup import escape

from . import __version__
from .backends.base import BackendUnavailable
from .errors import ConfigError, RunInterrupted
from .judging import Judge, JudgeSettings
from .judging.adherence import check_session
from .judging.judge import METHOD as JUDGE_METHOD
from .progress import RunProgress, console, print_summary
from .provenance import git_commit, host_info
from .records import ContentRef, Manifest, RoleRecord, RunConfig, Summary
from .roles import BackendKind, Backends, Role, RoleSpec, resolve_roles, role_identity
from .simulation.client_modes import ReplayClient, ScriptedClient, SimulatedClient
from .simulation.engine import SessionEngine, run_bounded
from .store import RunStore
from .suites import LoadedSuite, SamplingParams, load_suite
from .summary import summarise


@dataclass
class RunResult:
    directory: Path
    manifest: Manifest
    summary: Summary


def _sampling(loaded: LoadedSuite, max_tokens: int | None, temperature: float | None) -> dict[str, SamplingParams]:
    therapist = loaded.suite.sampling.therapist
    overrides = {k: v for k, v in {"max_tokens": max_tokens, "temperature": temperature}.items() if v is not None}
    therapist = therapist.model_copy(update=overrides)
    client = loaded.suite.sampling.client
    if max_tokens is not None:
        client = client.model_copy(update={"max_tokens": max_tokens})
    return {"therapist": therapist, "client": client}


def _config(loaded: LoadedSuite, roles: dict[str, Role], turns: int, sampling: dict[str, SamplingParams],
            settings: JudgeSettings) -> RunConfig:
    suite = loaded.suite
    return RunConfig(
        suite=ContentRef(id=suite.id, version=suite.version, sha256=loaded.content_hash),
        rubrics=[ContentRef(id=r.id, version=r.version, sha256=r.content_hash) for r in loaded.rubrics],
        clients_sha256=hashlib.sha256("".join(s.model_dump_json() for s in loaded.sources).encode()).hexdigest(),
        turns=turns,
        sampling=sampling if suite.unit == "session" else {"therapist": sampling["therapist"]},
        therapist_system_prompt_sha256=hashlib.sha256(suite.therapist_system_prompt.encode()).hexdigest(),
        roles={name: role.model_hash or role.identity for name, role in roles.items()},
        judge_method=f"{JUDGE_METHOD};min_mass={settings.min_mass}" + (f";layout={settings.layout}" if settings.layout != "transcript-first" else ""),
        adherence_threshold=settings.adherence_threshold,
    )


def _judge_validation(path: Path, judge_identity: str) -> dict:
    """The validation report a run's judge was checked with; it must be about this very judge."""
    import json

    try:
        report = json.loads(path.read_text())
        validated = report["judge"]["identity"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--judge-validation {path}: not an evalkit validation report ({exc})") from None
    if validated != judge_identity:
        raise ConfigError(f"--judge-validation {path}: it validated judge {validated}, but this run's judge is {judge_identity}")
    headline = {rubric: {c: s.get("judge_human", {}).get("icc_a1") for c, s in section["composites"].items()}
                for rubric, section in report.get("rubrics", {}).items()}
    return {"report": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "created_at": report.get("created_at"), "materials": report.get("materials"),
            "raters": len(report.get("raters", [])), "icc_a1_by_composite": headline}


def _role_record(role: Role) -> RoleRecord:
    info = role.backend.info.model_dump()  # type: ignore[union-attr]
    if role.kind != "openai":
        info["endpoint"] = None  # a managed server's loopback port means nothing after the run
    return RoleRecord(**info, defaulted_to_therapist=role.defaulted)


def default_run_dir(suite_id: str, model: str | None) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model or "endpoint").name).strip("-") or "model"
    return Path("results") / f"{suite_id}-{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


async def run_async(model: str | None = None, suite: str = "act-fm", *, endpoint: str | list[str] | None = None,
                    api_key_env: str | None = None, backend: BackendKind = "auto",
                    client: RoleSpec | None = None, judge: RoleSpec | None = None,
                    sessions: int | None = None, turns: int | None = None, concurrency: int = 16,
                    judge_concurrency: int = 64, out: str | Path | None = None, resume: bool = False,
                    max_tokens: int | None = None, temperature: float | None = None,
                    max_model_len: int | None = None, vllm_args: list[str] | None = None,
                    trust_remote_code: bool = False, judge_settings: JudgeSettings | None = None,
                    show_progress: bool = True, command: list[str] | None = None,
                    replay_client: str | Path | None = None, scripted_client: str | Path | None = None,
                    judge_validation: str | Path | None = None) -> RunResult:
    """Simulate the suite's sessions against `model`, judge them, and write results/<run-id>/.

    `endpoint`: one URL, or several replicas serving the same model (sessions are spread across them and
    survive the loss of all but one). `replay_client` re-uses a stored run's client turns while the therapist's replies match it;
    `scripted_client` takes every client turn from a file. Use this form inside a running event loop
    (a notebook); `run` is the same for plain scripts.
    Raises `EvalkitError` (one-line message) for bad input or a backend that fails; what finished is kept.
    """
    judge_settings = judge_settings or JudgeSettings()
    if sessions is not None and sessions < 1:
        raise ConfigError(f"--sessions {sessions}: expected a positive number")
    if turns is not None and turns < 1:
        raise ConfigError(f"--turns {turns}: expected a positive number")
    if concurrency < 1:
        raise ConfigError(f"--concurrency {concurrency}: expected a positive number")
    loaded = load_suite(suite)
    if loaded.suite.unit == "response":  # a single reply has no simulated client turn to check
        judge_settings = dataclasses.replace(judge_settings, adherence_threshold=None)
    turns = loaded.suite.turns if (turns is None or loaded.suite.unit == "response") else turns
    endpoints = [endpoint] if isinstance(endpoint, str) else endpoint
    specs = {"therapist": RoleSpec.of(model, endpoints, api_key_env, backend), "client": client or RoleSpec(),
             "judge": judge or RoleSpec()}
    if loaded.suite.unit == "response":
        specs["client"] = RoleSpec()  # single responses need no simulated client
    roles, warnings = resolve_roles(specs)
    if loaded.suite.unit == "response":
        warnings = [w for w in warnings if not w.startswith("self-play")]
    sampling = _sampling(loaded, max_tokens, temperature)
    if replay_client and scripted_client:
        raise ConfigError("--replay-client and --scripted-client exclude each other")
    if (replay_client or scripted_client) and loaded.suite.unit != "session":
        raise ConfigError(f"suite '{loaded.suite.id}' has no simulated client to replay or script")
    cases = loaded.cases(sessions)
    in_use = list({c.persona.id: c.persona for c in cases if c.persona}.values())
    client_source = (ReplayClient(Path(replay_client)) if replay_client
                     else ScriptedClient(Path(scripted_client), in_use) if scripted_client else None)
    directory = Path(out) if out else default_run_dir(loaded.suite.id, model)
    store = RunStore(directory)
    backends = Backends(directory, max_model_len=max_model_len, vllm_args=list(vllm_args or []),
                         trust_remote_code=trust_remote_code)

    manifest: Manifest | None = None
    try:
        # Endpoint roles are cheap to check and name their model, which the configuration needs.
        for role in roles.values():
            if role.kind == "openai":
                role.backend = await backends.build(role)
                role.identity = role_identity(role, role.backend)
        config = _config(loaded, roles, turns, sampling, judge_settings)
        config.client_mode = client_source.mode if client_source else "simulated"
        validation = _judge_validation(Path(judge_validation), config.roles["judge"]) if judge_validation else None
        previous = store.prepare(config, resume=resume)
        for warning in warnings:
            console.print(f"[bold yellow]warning:[/bold yellow] {escape(warning)}")
        for role in roles.values():
            role.backend = role.backend or await backends.build(role)
        manifest = Manifest(
            evalkit_version=__version__, run_id=directory.name, status="running",
            command=command or sys.argv, git_commit=git_commit(), config=config,
            config_sha256=hashlib.sha256(config.model_dump_json().encode()).hexdigest(),
            roles={name: _role_record(role) for name, role in roles.items()},
            self_play=roles["client"].defaulted and loaded.suite.unit == "session", self_judged=roles["judge"].defaulted,
            sessions_requested=max(len(cases), previous.sessions_requested if previous else 0),
            started_at=previous.started_at if previous else datetime.now(timezone.utc),
            host=host_info(), warnings=warnings, judge_validation=validation,
        )
        store.write_manifest(manifest)
        simulated = SimulatedClient(roles["client"].backend, sampling["client"])
        if isinstance(client_source, ReplayClient):
            client_source.fallback = simulated
        summary = await _simulate_and_judge(loaded, roles, client_source or simulated, store, cases, turns, sampling,
                                            concurrency, judge_concurrency, judge_settings, show_progress, directory.name)
    except BackendUnavailable as exc:
        if manifest:
            _finish(store, manifest, "interrupted", roles)
        why = backends.explain_failure() or str(exc)
        done = len(store.sources())
        raise RunInterrupted(f"{why}. {done} of {len(cases)} sessions finished and are kept in {directory}; "
                             f"re-run the same command with --resume to continue") from None
    except BaseException:
        if manifest:
            _finish(store, manifest, "interrupted", roles)
        raise
    finally:
        await backends.close()
    manifest = _finish(store, manifest, "complete", roles)
    names = {r.id: {**{i.id: i.name for i in r.items}, **{c.id: c.name for c in r.composites}} for r in loaded.rubrics}
    from .report import build_report

    report = build_report([directory])
    if show_progress:
        print_summary(summary, names)
        console.print(f"results: [bold]{escape(str(directory))}[/bold] · report: [bold]{escape(str(report))}[/bold]")
    return RunResult(directory=directory, manifest=manifest, summary=summary)


def _finish(store: RunStore, manifest: Manifest, status: str, roles: dict[str, Role]) -> Manifest:
    scores = store.score_values()
    # Replica request counts and failures are known only now.
    records = {name: record.model_copy(update={"replicas": roles[name].backend.info.replicas})  # type: ignore[union-attr]
               if record.replicas else record for name, record in manifest.roles.items()}
    manifest = manifest.model_copy(update={"status": status, "ended_at": datetime.now(timezone.utc), "roles": records, "counts": {
        "sessions": len(store.sources()), "sessions_judged": len(scores),
        "item_scores": sum(len(rows) for rows in scores.values()),
        "invalid_item_scores": sum(not r.valid for rows in scores.values() for r in rows)}})
    store.write_manifest(manifest)
    return manifest


@functools.wraps(run_async, assigned=("__doc__", "__annotations__"))
def run(*args, **kwargs) -> RunResult:
    return asyncio.run(run_async(*args, **kwargs))


async def _simulate_and_judge(loaded, roles, client_source, store, cases, turns, sampling, concurrency,
                              judge_concurrency, judge_settings, show_progress, run_id) -> Summary:
    # Transcripts are streamed from disk between stages and never all held at once: memory stays flat
    # however many sessions a run has.
    done = set(store.sources())
    todo = (case for case in cases if case.session_id not in done)
    items_per_session = sum(len(r.items) for r in loaded.rubrics)
    with RunProgress(sessions=len(cases), judge_items=len(cases) * items_per_session, enabled=show_progress) as progress:
        progress.skip_sessions(len(done))
        engine = SessionEngine(suite_id=loaded.suite.id, system_prompt=loaded.suite.therapist_system_prompt,
                               turns=turns, therapist=roles["therapist"].backend, client=client_source,
                               therapist_sampling=sampling["therapist"], progress=progress)

        def keep(case, transcript):
            store.append_transcript(transcript)
            progress.session_done(transcript)

        await run_bounded(todo, engine.run_case, concurrency=concurrency, on_result=keep)

        scored = store.scored_sessions()
        progress.start_judging(len(scored) * items_per_session)
        judge = Judge(roles["judge"].backend, judge_settings, concurrency=judge_concurrency)

        def record(transcript, rows):
            store.append_scores(rows)
            progress.items_judged(len(rows))

        unjudged = (t for t in store.iter_transcripts() if t.session_id not in scored)
        await run_bounded(unjudged, lambda t: judge.score_transcript(t, loaded.rubrics),
                          concurrency=concurrency, on_result=record)
        threshold = judge_settings.adherence_threshold
        if threshold is not None:
            personas = {p.id: p for p in loaded.personas}
            checked = set(store.adherence())
            sessions = len(store.sources())
            progress.start_adherence(sessions, already=len(checked))

            def keep_adherence(transcript, row):
                store.append_adherence(row)
                progress.adherence_done()

            unchecked = (t for t in store.iter_transcripts() if t.session_id not in checked)
            await run_bounded(unchecked, lambda t: check_session(judge.backend, personas[t.source_id], t, threshold),
                              concurrency=concurrency, on_result=keep_adherence)
    summary = summarise(run_id, loaded.suite.id, loaded.rubrics, store.sources(), store.score_values(),
                        store.adherence(), judge_settings.adherence_threshold)
    store.write_summary(summary)
    return summary
