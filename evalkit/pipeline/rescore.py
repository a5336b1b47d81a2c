"""`evalkit rescore`: re-judge a stored run's transcripts with another judge into a new run directory.

The new run carries the same transcripts and inputs, names the source run and the new judge in its manifest,
keeps the source run's inclusion policy (unless told otherwise), and resumes like `run` when the same command is
given again. Its manifest is written before anything else, so a rescore cut at any point is resumed, never
refused; transcripts are streamed, never held in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from dataclasses import replace as dc_replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evalkit.backends.base import Backend, BuildContext
from evalkit.backends.roles import RoleBackends, RoleSpec, resolve_roles
from evalkit.core.errors import ConfigError
from evalkit.core.fileio import write_lines_atomic
from evalkit.core.progress import Reporter
from evalkit.core.provenance import git_commit, host_info
from evalkit.core.version import __version__
from evalkit.judging import Judge, JudgeSettings
from evalkit.pipeline.evaluate import RunResult
from evalkit.pipeline.lifecycle import RunLifecycle
from evalkit.pipeline.spec import RoleConfig
from evalkit.pipeline.stages import ScoringPlan, count, score, summarise_run
from evalkit.store.records import ContentRef, Inclusion, RoleRecord
from evalkit.store.rundir import TRANSCRIPTS, RunDir


async def rescore_async(source: str | Path, *, judge: RoleConfig | Backend, out: str | Path, rubrics: list[str] | None = None,
                        judge_min_mass: float = 0.5, judge_mass_check: bool = True, adherence: bool = True,
                        judge_concurrency: int = 64, concurrency: int = 16, rejudge_invalid: bool = False,
                        include_flagged: bool | None = None, reporter: Reporter | None = None,
                        command: list[str] | None = None) -> RunResult:
    """Re-judge a stored run's transcripts (all its scorers, or only `rubrics`) into a new run directory.

    `include_flagged`: None keeps the source run's inclusion policy.
    """
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
    for _ in source_dir.iter_transcripts():  # a corrupt source fails here, before anything is written
        pass
    session = loaded.suite.unit == "session"
    old = source_manifest.config
    settings = JudgeSettings(min_mass=judge_min_mass, check_mass=judge_mass_check,
                             adherence_threshold=(old.adherence_threshold or 0.8) if adherence and session else None)
    recorded = source_manifest.inclusion
    inclusion = Inclusion(include_flagged=recorded.include_flagged if include_flagged is None else include_flagged,
                          exclude_truncated=loaded.suite.exclude_truncated)
    role = resolve_roles({"therapist": RoleSpec(instance=judge) if not isinstance(judge, RoleConfig) else judge.role_spec()})["therapist"]
    role.name = "judge"  # resolved in the therapist's place: a rescore binds no other role
    backends = RoleBackends(BuildContext(log_dir=out_dir.directory))
    # A reward scorer reads the same reward server the source run recorded ("reward/1@URL").
    reward = next((d.split("@", 1)[1] for d in old.scorers if d.startswith("reward/") and "@" in d), None)
    plan = ScoringPlan.of(loaded, settings, simulated_client=not old.client_mode.startswith("scripted"),
                          options={"reward_endpoint": reward})
    lifecycle = RunLifecycle(out_dir, command or sys.argv)
    try:
        await backends.bind(role)
        config = old.model_copy(update={"rubrics": [ContentRef(id=r.id, version=r.version, sha256=r.content_hash) for r in loaded.rubrics],
                                        "scorers": plan.describe(), "judge_method": settings.method,
                                        "adherence_threshold": settings.adherence_threshold,
                                        "roles": {**old.roles, "judge": role.identity}})
        previous = lifecycle.open(config, resume=False)
        therapist = source_manifest.roles["therapist"].identity or old.roles["therapist"]
        lifecycle.start(source_manifest.model_copy(update={
            "evalkit_version": __version__, "run_id": out_dir.name, "status": "running", "command": lifecycle.command,
            "git_commit": git_commit(), "config": config, "config_sha256": hashlib.sha256(config.model_dump_json().encode()).hexdigest(),
            "roles": {**source_manifest.roles, "judge": RoleRecord(**role.backend.info.model_dump(), identity=role.identity)},  # type: ignore[union-attr]
            "self_judged": role.identity == therapist, "counts": source_manifest.counts.model_copy(update={
                "score_rows": 0, "invalid_score_rows": 0, "sessions_scored": 0, "flagged_sessions": 0}),
            "started_at": previous.started_at if previous else datetime.now(timezone.utc), "ended_at": None,
            "host": host_info(), "rescored_from": str(source_dir.directory.resolve()), "judge_validation": None, "judge_check": None,
            "inclusion": inclusion}))
        if not out_dir.path("inputs").is_dir():
            out_dir.write_inputs(loaded)
        if not out_dir.path(TRANSCRIPTS).exists():
            write_lines_atomic(out_dir.path(TRANSCRIPTS), (t.model_dump_json() for t in source_dir.iter_transcripts()),
                               make_parents=False)
        await score(out_dir, plan, Judge(role.backend, settings, concurrency=judge_concurrency), concurrency=concurrency,  # type: ignore[arg-type]
                    reporter=reporter, rejudge_invalid=rejudge_invalid)
        summary = summarise_run(out_dir, plan, settings, inclusion)
        manifest = lifecycle.complete(summary.counts, roles=_judge_retries(lifecycle.manifest, role))
    except BaseException as exc:
        error = lifecycle.stopped(exc, counts=lambda: count(out_dir, plan), kept=f"; the rescored rows so far are kept in {out_dir.directory}",
                                  explain=backends.explain_failure)
        if error is exc:
            raise
        raise error from None
    finally:
        lifecycle.close()
        await backends.close()
        reporter.close()
    return RunResult(directory=out_dir.directory, manifest=manifest, summary=summary)


def _judge_retries(manifest, role) -> dict:
    """The manifest's roles with the new judge's retry volume (requests sent again, by cause)."""
    retries = getattr(role.backend.info, "retries", None) if role.backend is not None else None
    if manifest is None or not retries:
        return manifest.roles if manifest is not None else {}
    return {**manifest.roles, "judge": manifest.roles["judge"].model_copy(update={"retries": retries})}


def rescore(*args: Any, **kwargs: Any) -> RunResult:
    """`rescore_async` for plain scripts (not inside a running event loop)."""
    return asyncio.run(rescore_async(*args, **kwargs))
