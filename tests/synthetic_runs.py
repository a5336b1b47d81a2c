"""Stored runs written directly to disk, with effects we choose, for testing statistics without a model."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from evalkit.records import ContentRef, ItemScore, Manifest, RoleRecord, RunConfig, Transcript, Turn
from evalkit.rubrics import load_rubric
from evalkit.store import RunStore
from evalkit.summary import summarise

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _distribution(value: float, levels: list[int]) -> dict[str, float]:
    """Two neighbouring levels whose expectation is `value`."""
    lo = min(max(math.floor(value), levels[0]), levels[-1] - 1)
    p_hi = value - lo
    dist = {str(level): 0.0 for level in levels}
    dist[str(lo)], dist[str(lo + 1)] = 1 - p_hi, p_hi
    return dist


def write_run(directory: Path, *, effect: float, persona_effects: dict[str, float], replicates: int = 2,
              rubric_id: str = "psychocounsel", suite_version: str = "1.0.0", seed: int = 0,
              noise: float = 0.4, judge: str = "judge-x", reply_chars: int = 200, skip: set[str] = frozenset(),
              override: dict[tuple[str, str], float | None] | None = None, turns: int = 1) -> Path:
    """`override[(session, item)]` sets one score outright (None: an invalid score)."""
    rubric = load_rubric(rubric_id)
    rng = np.random.default_rng(seed)
    store = RunStore(directory)
    ref = ContentRef(id=rubric.id, version=rubric.version, sha256="s")
    config = RunConfig(suite=ContentRef(id=rubric_id, version=suite_version, sha256="x"), rubrics=[ref],
                       clients_sha256="c", turns=1, sampling={}, therapist_system_prompt_sha256="p",
                       roles={"therapist": directory.name}, judge_method="m")
    store.prepare(config, resume=False)
    role = RoleRecord(kind="openai", model=judge)
    store.write_manifest(Manifest(evalkit_version="test", run_id=directory.name, status="complete", command=[],
                                  git_commit=None, config=config, config_sha256="h", roles={"judge": role, "therapist": role},
                                  self_play=False, self_judged=False, sessions_requested=0, started_at=NOW, host={}))
    for persona, persona_effect in persona_effects.items():
        for r in range(replicates):
            session = f"{persona}#{r}"
            if session in skip:
                continue
            conversation = []
            for _ in range(turns):
                conversation.append(Turn(role="client", content="I keep going over it at night. " * 8))
                conversation.append(Turn(role="therapist", content="x" * int(reply_chars + rng.integers(0, 100))))
            store.append_transcript(Transcript(session_id=session, suite=rubric_id, unit="response" if turns == 1 else "session",
                                               source_id=persona, replicate=r, turns=conversation,
                                               stop_reason="single_response" if turns == 1 else "max_turns",
                                               started_at=NOW, ended_at=NOW))
            rows = []
            for item in rubric.items:
                levels = rubric.scale_of(item).levels
                centre = (levels[0] + levels[-1]) / 2
                value = float(np.clip(centre + effect + persona_effect + rng.normal(0, noise), levels[0], levels[-1]))
                if override and (session, item.id) in override:
                    value = override[(session, item.id)]
                row = dict(session_id=session, source_id=persona, rubric=rubric.id, rubric_version=rubric.version,
                           item=item.id, judge=judge)
                if value is None:
                    rows.append(ItemScore(**row, valid=False, reason="planted invalid score"))
                else:
                    rows.append(ItemScore(**row, valid=True, expected=value, distribution=_distribution(value, levels)))
            store.append_scores(rows)
    store.write_summary(summarise(directory.name, rubric_id, [rubric], store.sources(), store.scores()))
    return directory
