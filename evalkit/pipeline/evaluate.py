"""`evalkit run` as Python: prepare -> bind roles -> simulate -> score -> summarise, into one run directory.

`evaluate(spec)` does one run; `evaluate_many(specs)` several (each checkpoint, or each LoRA adapter of one
base model on one managed vLLM server). The library prints nothing: it reports through a `Reporter` and raises
`EvalkitError` subclasses that name fields; what finished is always on disk and the same command resumes it.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from evalkit.backends.base import Backend, BuildContext
from evalkit.backends.roles import RoleBackends, resolve_roles, self_play_warnings
from evalkit.core.errors import ConfigError
from evalkit.core.progress import Reporter
from evalkit.core.provenance import git_commit, host_info
from evalkit.core.secrets import scrub
from evalkit.core.version import __version__
from evalkit.judging import Judge
from evalkit.pipeline.lifecycle import RunLifecycle
from evalkit.pipeline.prepare import (
    Prepared,
    default_run_dir,
    judge_check_record,
    judge_validation_record,
    prepare,
    role_record,
    role_specs,
    run_config,
)
from evalkit.pipeline.spec import EvalSpec, RoleConfig
from evalkit.pipeline.stages import ScoringPlan, count, note_extent, score, simulate, summarise_run
from evalkit.simulation.client_modes import ReplayClient, ScriptedClient, SimulatedClient
from evalkit.store.records import Manifest, Summary
from evalkit.store.rundir import RunDir


@dataclass
class RunResult:
    directory: Path
    manifest: Manifest
    summary: Summary


async def evaluate(spec: EvalSpec, *, backends: dict[str, Backend] | None = None, reporter: Reporter | None = None,
                   command: list[str] | None = None) -> RunResult:
    """Simulate the suite's sessions against the therapist model, score them, and write the run directory.

    `backends`: ready backend objects for any role (they override the spec's model/endpoint for that role).
    Use inside a running event loop (a notebook); `run` is the same for plain scripts.
    """
    prepared = prepare(spec)
    if spec.lora:
        raise ConfigError("lora: use evaluate_many (evalkit run with --lora) to evaluate several adapters")
    return await _evaluate(prepared, backends or {}, reporter or Reporter(), command or sys.argv)


async def _evaluate(prepared: Prepared, instances: dict[str, Backend], reporter: Reporter, command: list[str],
                    context: BuildContext | None = None) -> RunResult:
    spec, loaded = prepared.spec, prepared.loaded
    roles = resolve_roles(role_specs(spec, instances, prepared.session))
    client_source = (ReplayClient(Path(spec.replay_client)) if spec.replay_client
                     else ScriptedClient(Path(spec.scripted_client), list({c.persona.id: c.persona for c in prepared.cases}.values()))
                     if spec.scripted_client else None)
    plan = ScoringPlan.of(loaded, prepared.settings, simulated_client=not isinstance(client_source, ScriptedClient),
                          options={"emotion_model": spec.emotion_model, "emotion_labels": spec.emotion_labels,
                                   "reward_endpoint": spec.reward_endpoint})
    owned_context = context is None
    context = context or BuildContext(log_dir=Path(spec.out or Path("results") / ".starting"), max_model_len=spec.max_model_len,
                                      vllm_args=list(spec.vllm_args), trust_remote_code=spec.trust_remote_code,
                                      reasoning_parser=spec.reasoning_parser)
    backends = RoleBackends(context)
    lifecycle: RunLifecycle | None = None
    try:
        # Endpoints are cheap to check and name their model, which the configuration needs; local models are
        # hashed already. Managed servers start only once the directory is known to accept the run.
        for role in roles.values():
            if role.kind in ("openai", "mock") or role.spec.instance is not None:
                await backends.bind(role)
        self_play, self_judged, role_warnings = self_play_warnings(roles, has_client=prepared.session and client_source is None,
                                                                   has_judge=plan.uses_judge)
        config = run_config(loaded, roles, prepared.turns, prepared.sampling, prepared.settings, plan,
                            client_source.mode if client_source else "simulated", spec.seed)
        if spec.emotion_model is not None:
            from evalkit.core.provenance import hash_model_dir

            emotion_dir = Path(spec.emotion_model)
            if not (emotion_dir / "config.json").is_file():
                raise ConfigError(f"emotion_model {emotion_dir}: not a model folder (no config.json)")
            config.emotion_model, config.emotion_labels = hash_model_dir(emotion_dir), dict(spec.emotion_labels)
        therapist = roles["therapist"]
        model_name = therapist.spec.model or (therapist.backend.info.model if therapist.backend else None)
        model_name = scrub(model_name) if model_name else None  # a served name holding a key never names a folder
        directory = Path(spec.out or default_run_dir(loaded.suite.id, model_name, config))
        validation = judge_validation_record(Path(spec.judge_validation), config.roles["judge"]) if spec.judge_validation else None
        fitness = judge_check_record(Path(spec.judge_check), config.roles["judge"]) if spec.judge_check else None
        store = RunDir(directory)
        lifecycle = RunLifecycle(store, command)
        previous = lifecycle.open(config, resume=spec.resume)
        context.log_dir = directory
        warnings = [*prepared.warnings, *role_warnings]
        for warning in warnings:
            reporter.warn(warning)
        inclusion = previous.inclusion if previous is not None and spec.include_flagged is None else prepared.inclusion
        idle = _nothing_left(store, plan, prepared, previous)
        for role in roles.values():
            if role.backend is None and not idle:  # a finished run re-run starts no server
                await backends.bind(role)
        if previous is None:
            store.write_inputs(loaded)
        lifecycle.start(Manifest(
            evalkit_version=__version__, run_id=directory.name, status="running", command=command, git_commit=git_commit(),
            config=config, config_sha256=hashlib.sha256(config.model_dump_json().encode()).hexdigest(),
            roles={name: role_record(role, prepared.sampling) if role.backend else previous.roles[name]  # type: ignore[union-attr]
                   for name, role in roles.items()},
            self_play=self_play, self_judged=self_judged,
            sessions_requested=max(len(prepared.cases), previous.sessions_requested if previous else 0),
            started_at=previous.started_at if previous else datetime.now(timezone.utc),
            host=host_info(), warnings=warnings, judge_validation=validation, judge_check=fitness,
            inclusion=inclusion))
        if idle:
            note_extent(set(store.sources()), prepared.cases, store.directory, reporter)
            reporter.note(f"{store.directory}: every session is simulated and scored already; nothing was sent to any model")
            summary = summarise_run(store, plan, prepared.settings, inclusion)
            return RunResult(directory=store.directory, manifest=lifecycle.complete(summary.counts), summary=summary)
        client = None
        if prepared.session:
            client = SimulatedClient(roles["client"].backend, prepared.sampling["client"])
            if isinstance(client_source, ReplayClient):
                client_source.fallback = client
            client = client_source or client
        await simulate(loaded, store, prepared.cases, therapist=roles["therapist"].backend, client=client, turns=prepared.turns,
                       sampling=prepared.sampling["therapist"], concurrency=spec.concurrency, reporter=reporter)
        judge = Judge(roles["judge"].backend, prepared.settings, concurrency=spec.judge_concurrency)
        await score(store, plan, judge, concurrency=spec.concurrency, reporter=reporter, rejudge_invalid=spec.rejudge_invalid)
        summary = summarise_run(store, plan, prepared.settings, inclusion)
        manifest = lifecycle.complete(summary.counts, roles=_with_replicas(lifecycle.manifest, roles))
    except BaseException as exc:
        if lifecycle is None:
            raise
        kept = (f"; {len(lifecycle.store.sources())} of {len(prepared.cases)} sessions are kept in {lifecycle.store.directory}"
                if lifecycle.manifest else "")
        error = lifecycle.stopped(exc, counts=lambda: count(lifecycle.store, plan), kept=kept, explain=backends.explain_failure,
                                  **({"roles": _with_replicas(lifecycle.manifest, roles)} if lifecycle.manifest else {}))
        if error is exc:
            raise
        raise error from None
    finally:
        if lifecycle is not None:
            lifecycle.close()
        await backends.close(stop_servers=owned_context)
        reporter.close()
    return RunResult(directory=store.directory, manifest=manifest, summary=summary)


def _nothing_left(store: RunDir, plan: ScoringPlan, prepared: Prepared, previous: Manifest | None) -> bool:
    """A complete run asked for again with nothing to add: no session to simulate, no row to write or re-ask."""
    if previous is None or previous.status != "complete" or prepared.spec.rejudge_invalid:
        return False
    done = set(store.sources())
    counts = count(store, plan)
    return all(c.session_id in done for c in prepared.cases) and counts.missing_score_rows == 0


def _with_replicas(manifest: Manifest | None, roles: dict) -> dict:
    """The manifest's role records with how each replica fared (requests, and why one was taken out) and how many
    requests were sent again, by cause (the run's retry volume)."""
    assert manifest is not None
    out = {}
    for name, record in manifest.roles.items():
        backend = roles[name].backend if name in roles else None
        if backend is not None:
            update = {"retries": getattr(backend.info, "retries", None) or record.retries}
            if record.replicas:
                update["replicas"] = backend.info.replicas
            record = record.model_copy(update=update)
        out[name] = record
    return out


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
    context = BuildContext(log_dir=Path(spec.out or "results"), max_model_len=spec.max_model_len, vllm_args=list(spec.vllm_args),
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
                results.append(await _evaluate(prepare(sub), {"therapist": adapter}, reporter, command, context=context))
            finally:
                await adapter.aclose()
    finally:
        await server.aclose()
        while context.closers:
            context.closers.pop()()
    return results
