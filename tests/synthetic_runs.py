"""Stored runs written directly to disk, with effects we choose, for testing statistics, gate and report without a model.

They are complete, self-contained run directories (manifest, inputs/, transcripts, scores, summary), written
through evalkit's own RunDir and summary stage, so every reader treats them like real runs.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from evalkit.content.suites import load_suite
from evalkit.judging import JudgeSettings
from evalkit.pipeline.stages import ScoringPlan, summarise_run
from evalkit.store.records import ContentRef, Inclusion, ItemScore, Manifest, RoleRecord, RunConfig, Transcript, Turn
from evalkit.store.rundir import RunDir

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SUITE_OF = {"psychocounsel": "psychocounsel", "tes": "tes", "act-fm": "act-fm", "safety": "safety"}


def _distribution(value: float, levels: list[int]) -> dict[str, float]:
    """Two neighbouring levels whose expectation is `value`."""
    lo = min(max(math.floor(value), levels[0]), levels[-1] - 1)
    p_hi = value - lo
    dist = {str(level): 0.0 for level in levels}
    dist[str(lo)], dist[str(lo + 1)] = 1 - p_hi, p_hi
    return dist


def write_run(directory: Path, *, effect: float, persona_effects: dict[str, float], replicates: int = 2,
              rubric_id: str = "psychocounsel", suite_version: str | None = None, seed: int = 0,
              noise: float = 0.4, judge: str = "judge-x", reply_chars: int = 200, skip: set[str] = frozenset(),
              override: dict[tuple[str, str], float | None] | None = None, turns: int = 1,
              status: str = "complete", surfaced: float = 0.9, therapist: str | None = None, client: str | None = None,
              sampling: dict[str, dict] | None = None, judge_method: str = "m") -> Path:
    """`persona_effects`: persona (or utterance) id -> its effect.

    `override[(session, item)]` sets one score outright (None: an invalid score). The suite is the built-in one
    for the rubric, restricted to the given personas/utterances; only the rubric `rubric_id` is scored (plus the
    risk-surfaced check, at probability `surfaced`, for risk personas when the rubric has critical items).
    `therapist` (default: the directory's name) and `client` are the roles' identities; `sampling` overrides the suite's
    sampling settings per role, e.g. {"therapist": {"temperature": 1.2}}.
    """
    loaded = load_suite(SUITE_OF[rubric_id])
    rubric = next(r for r in loaded.rubrics if r.id == rubric_id)
    use = next(u for u, r in loaded.rubric_uses if r.id == rubric_id)
    template = loaded.sources[0]  # ids not in the library (e.g. "u001") are copies of the suite's first source
    pool = {s.id: s for s in loaded.sources}
    if loaded.suite.unit == "session":
        from evalkit.content.personas import load_personas

        pool = {p.id: p for p in load_personas()}
    sources = [pool[pid] if pid in pool else template.model_copy(update={"id": pid}) for pid in persona_effects]
    suite = loaded.suite.model_copy(update={"rubrics": [use], "version": suite_version or loaded.suite.version})
    kind = {"personas": sources} if loaded.suite.unit == "session" else {"utterances": sources}
    loaded = replace(loaded, suite=suite, rubrics=[rubric], **{"personas": [], "utterances": [], **kind})
    rng = np.random.default_rng(seed)
    store = RunDir(directory)
    therapist = therapist or directory.name
    base_sampling = {"therapist": loaded.suite.sampling.therapist, "client": loaded.suite.sampling.client}
    if loaded.suite.unit != "session":
        base_sampling.pop("client")
    settings = {role: params.model_copy(update=(sampling or {}).get(role, {})) for role, params in base_sampling.items()}
    roles = {"therapist": therapist, "judge": judge, **({"client": client} if client else {})}
    config = RunConfig(suite=ContentRef(id=loaded.suite.id, version=loaded.suite.version, sha256="x"),
                       rubrics=[ContentRef(id=rubric.id, version=rubric.version, sha256=rubric.content_hash)],
                       clients_sha256="c", turns=turns, sampling=settings, therapist_system_prompt_sha256="p",
                       roles=roles, judge_method=judge_method, adherence_threshold=None)
    store.prepare(config, resume=False)
    store.write_inputs(loaded)
    role = RoleRecord(kind="openai", model=judge, identity=judge)
    records = {"judge": role, "therapist": role.model_copy(update={"model": therapist, "identity": therapist})}
    if client:
        records["client"] = role.model_copy(update={"model": client, "identity": client})
    manifest = Manifest(evalkit_version="test", run_id=directory.name, status=status, command=[], git_commit=None,  # type: ignore[arg-type]
                        config=config, config_sha256="h", roles=records,
                        self_play=False, self_judged=False, sessions_requested=len(sources) * replicates, started_at=NOW, host={})
    store.write_manifest(manifest)
    for source, persona_effect in zip(sources, persona_effects.values(), strict=True):
        for r in range(replicates):
            session = f"{source.id}#{r}"
            if session in skip:
                continue
            conversation = []
            for _ in range(turns):
                conversation.append(Turn(role="client", content="I keep going over it at night. " * 8))
                conversation.append(Turn(role="therapist", content="x" * int(reply_chars + rng.integers(0, 100))))
            store.append_transcript(Transcript(session_id=session, suite=loaded.suite.id, unit=loaded.suite.unit,
                                               source_id=source.id, replicate=r, turns=conversation,
                                               stop_reason="single_response" if loaded.suite.unit == "response" else "max_turns",
                                               started_at=NOW, ended_at=NOW))
            rows = []
            for item in rubric.items:
                levels = rubric.scale_of(item).levels
                centre = (levels[0] + levels[-1]) / 2
                value = float(np.clip(centre + effect + persona_effect + rng.normal(0, noise), levels[0], levels[-1]))
                if override and (session, item.id) in override:
                    value = override[(session, item.id)]
                row = dict(session_id=session, source_id=source.id, rubric=rubric.id, rubric_version=rubric.version,
                           item=item.id, judge=judge)
                if value is None:
                    rows.append(ItemScore(**row, valid=False, reason="planted invalid score"))
                else:
                    rows.append(ItemScore(**row, valid=True, expected=value, distribution=_distribution(value, levels)))
            if rubric.critical_items and getattr(source, "risk_level", "none") != "none":
                rows.append(ItemScore(session_id=session, source_id=source.id, rubric="risk-surfaced", rubric_version="1",
                                      item="surfaced", valid=True, expected=surfaced, judge=judge))
            store.append_scores(rows)
    plan = ScoringPlan.of(loaded, JudgeSettings(adherence_threshold=None), simulated_client=False)
    summarise_run(store, plan, JudgeSettings(adherence_threshold=None), Inclusion())
    return directory
