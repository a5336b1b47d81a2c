"""Stored runs as the analyses read them: each run's session views under its inclusion policy, and one long
table condition x session x metric -> value.

Runs are read through `RunDir`, with the rubrics and personas each run carries in inputs/, so statistics on
a stored run never depend on what is installed now. Which sessions count is decided once, by
`analysis.sessions` (the run's recorded inclusion policy, or an override), and safety metrics count only
sessions in which the persona's risk surfaced (elsewhere a safety rating says nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evalkit.analysis.sessions import SessionView, metric_table, session_views
from evalkit.content.rubrics import Rubric
from evalkit.content.suites import LoadedSuite
from evalkit.core.errors import ConfigError
from evalkit.store.records import Inclusion, Manifest, Transcript
from evalkit.store.rundir import RunDir


@dataclass(frozen=True)
class Run:
    name: str
    directory: Path
    manifest: Manifest
    suite: LoadedSuite
    transcripts: dict[str, Transcript]
    scores: pd.DataFrame  # one row per session x item: session_id, source_id, rubric, item, value, rating, valid
    views: list[SessionView] = field(default_factory=list)
    inclusion: Inclusion = Inclusion()

    @property
    def rubrics(self) -> list[Rubric]:
        return self.suite.rubrics

    @property
    def flagged(self) -> frozenset[str]:
        """Sessions whose simulated client failed a persona check systematically."""
        return frozenset(v.session_id for v in self.views if v.flagged)

    @property
    def excluded(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for view in self.views:
            if view.excluded:
                counts[view.excluded] = counts.get(view.excluded, 0) + 1
        return counts

    @property
    def judge_identity(self) -> str:
        judge = self.manifest.roles["judge"]
        return judge.identity or judge.model_hash or judge.model


def load_run(directory: str | Path, name: str | None = None, *, include_flagged: bool | None = None) -> Run:
    """A stored run; `include_flagged` overrides the inclusion policy the run recorded (None: the run's own)."""
    store = RunDir(directory)
    manifest = store.require_manifest()
    loaded = store.suite()
    latest = store.scores()  # one pass over scores.jsonl serves the table and the session views
    rows = []
    for session_rows in latest.values():
        for row in session_rows:
            rating = None if not row.valid or not row.distribution else int(max(row.distribution, key=row.distribution.get))
            rows.append({"session_id": row.session_id, "source_id": row.source_id, "rubric": row.rubric,
                         "item": row.item, "value": row.expected if row.valid else None, "rating": rating, "valid": row.valid})
    scores = pd.DataFrame(rows, columns=["session_id", "source_id", "rubric", "item", "value", "rating", "valid"])
    inclusion = inclusion_of(manifest, loaded, include_flagged)
    if store.path("summary.json").exists():
        store.summary()  # a damaged summary (read later by the report) stops the command before it writes anything
    transcripts = store.transcripts()
    views = list(session_views(transcripts.values(), latest, loaded, inclusion=inclusion,
                               threshold=manifest.config.adherence_threshold))
    return Run(name=name or Path(directory).name, directory=Path(directory), manifest=manifest, suite=loaded,
               transcripts=transcripts, scores=scores, views=views, inclusion=inclusion)


def inclusion_of(manifest: Manifest, loaded: LoadedSuite, include_flagged: bool | None = None) -> Inclusion:
    """The run's recorded inclusion policy (the suite's truncation rule always applies), with a command's override."""
    recorded = manifest.inclusion
    return Inclusion(include_flagged=recorded.include_flagged if include_flagged is None else include_flagged,
                     exclude_truncated=loaded.suite.exclude_truncated)


def incompatibilities(runs: list[Run]) -> list[str]:
    """What differs between runs that must agree for their scores to be compared."""
    first = runs[0].manifest.config
    problems = []
    for run in runs[1:]:
        config = run.manifest.config
        if (config.suite.id, config.suite.version) != (first.suite.id, first.suite.version):
            problems.append(f"suite: {runs[0].name} has {first.suite.id} {first.suite.version}, "
                            f"{run.name} has {config.suite.id} {config.suite.version}")
        mine = {(r.id, r.version, r.sha256) for r in first.rubrics}
        theirs = {(r.id, r.version, r.sha256) for r in config.rubrics}
        if mine != theirs:
            problems.append(f"rubrics: {runs[0].name} has {sorted((i, v) for i, v, _ in mine)}, "
                            f"{run.name} has {sorted((i, v) for i, v, _ in theirs)}"
                            + (" (same versions, different content)" if {x[:2] for x in mine} == {x[:2] for x in theirs} else ""))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        problems.append(f"condition names repeat ({', '.join(names)}); name runs distinctly")
    return problems


def metric_rows(runs: list[Run]) -> pd.DataFrame:
    """Long table of every metric (items and composites) per condition and session, for the sessions each run's
    inclusion policy keeps: condition, session, persona, metric, value (NaN when invalid)."""
    return metric_table((run.name, run.views) for run in runs)


def rubrics_of(runs: list[Run]) -> list[Rubric]:
    """The rubrics the runs were scored on, from the first run's own copy (compatibility is checked separately)."""
    if not runs:
        raise ConfigError("no runs given")
    return runs[0].rubrics


def metric_better(rubrics: list[Rubric], metric: str) -> str:
    """'higher' or 'lower': which direction is better for a metric."""
    rubric_id, score = metric.split(".", 1)
    rubric = next(r for r in rubrics if r.id == rubric_id)
    return rubric.better(score)
