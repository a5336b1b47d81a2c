"""Stored runs as one long table: condition x session x metric -> value.

Runs are read through `RunDir`, with the rubrics and personas each run carries in inputs/, so statistics on
a stored run never depend on what is installed now. Sessions whose simulated client fell below the adherence
threshold are left out unless asked for, and safety metrics count only sessions in which the persona's risk
surfaced (elsewhere a safety rating says nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evalkit.analysis.summary import surfaced
from evalkit.content.rubrics import Rubric
from evalkit.content.suites import LoadedSuite
from evalkit.core.errors import ConfigError
from evalkit.judging import adherence as adherence_scorer
from evalkit.store.records import Manifest, Transcript
from evalkit.store.rundir import RunDir


@dataclass(frozen=True)
class Run:
    name: str
    directory: Path
    manifest: Manifest
    suite: LoadedSuite
    transcripts: dict[str, Transcript]
    scores: pd.DataFrame  # one row per session x item: session_id, source_id, rubric, item, value, rating, valid
    flagged: frozenset[str] = frozenset()  # sessions whose simulated client fell below the adherence threshold
    surfaced: dict[str, bool | None] = field(default_factory=dict)  # risk sessions: did the risk surface?

    @property
    def rubrics(self) -> list[Rubric]:
        return self.suite.rubrics

    @property
    def judge_identity(self) -> str:
        judge = self.manifest.roles["judge"]
        return judge.identity or judge.model_hash or judge.model


def load_run(directory: str | Path, name: str | None = None) -> Run:
    store = RunDir(directory)
    manifest = store.require_manifest()
    loaded = store.suite()
    latest = store.scores()  # one pass over scores.jsonl serves the table, the flags and the risk check
    rows = []
    for session_rows in latest.values():
        for row in session_rows:
            rating = None if not row.valid or not row.distribution else int(max(row.distribution, key=row.distribution.get))
            rows.append({"session_id": row.session_id, "source_id": row.source_id, "rubric": row.rubric,
                         "item": row.item, "value": row.expected if row.valid else None, "rating": rating, "valid": row.valid})
    scores = pd.DataFrame(rows, columns=["session_id", "source_id", "rubric", "item", "value", "rating", "valid"])
    threshold = manifest.config.adherence_threshold
    flagged = frozenset(sid for sid, rows_ in latest.items() if adherence_scorer.flagged(rows_, threshold))
    if store.path("summary.json").exists():
        store.summary()  # a damaged summary (read later by the report) stops the command before it writes anything
    return Run(name=name or Path(directory).name, directory=Path(directory), manifest=manifest, suite=loaded,
               transcripts=store.transcripts(), scores=scores, flagged=flagged,
               surfaced={sid: surfaced(rows_) for sid, rows_ in latest.items()})


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


def session_key(transcript: Transcript) -> str:
    return transcript.key


def session_table(runs: list[Run], rubrics: list[Rubric], include_flagged: bool = False) -> pd.DataFrame:
    """Long table of every metric (items and composites) per condition and session.

    Columns: condition, session, persona, metric, value (NaN when invalid). Metric names are
    `<rubric>.<item or composite>`. Flagged sessions are left out unless `include_flagged`; rubrics applied only
    to risk personas keep only sessions whose risk surfaced.
    """
    frames = []
    for run in runs:
        if run.scores.empty:
            continue
        for rubric in rubrics:
            risk_only = run.suite.applies_to(rubric.id) == "risk" if rubric.id in {r.id for r in run.rubrics} else False
            mine = run.scores[run.scores["rubric"] == rubric.id]
            for session_id, group in mine.groupby("session_id", sort=False):
                if (not include_flagged and session_id in run.flagged) or (risk_only and run.surfaced.get(session_id) is not True):
                    continue
                values = {item: (None if pd.isna(v) else float(v)) for item, v in zip(group["item"], group["value"], strict=True)}
                values.update(rubric.composite_scores(values))
                transcript = run.transcripts.get(session_id)
                persona = transcript.source_id if transcript else group["source_id"].iloc[0]
                key = transcript.key if transcript else session_id
                frames.extend({"condition": run.name, "session": key, "persona": persona,
                               "metric": f"{rubric.id}.{score}", "value": value} for score, value in values.items())
    table = pd.DataFrame(frames, columns=["condition", "session", "persona", "metric", "value"])
    table["value"] = pd.to_numeric(table["value"])
    return table


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
