"""Stored runs as one long table: condition x session x metric -> value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import EvalkitError
from ..records import Manifest, Transcript
from ..rubrics import Rubric, load_rubric
from ..store import RunStore


@dataclass(frozen=True)
class Run:
    name: str
    directory: Path
    manifest: Manifest
    transcripts: dict[str, Transcript]
    scores: pd.DataFrame  # one row per session x item: session_id, source_id, rubric, item, value, rating, valid
    flagged: frozenset[str] = frozenset()  # sessions whose simulated client fell below the adherence threshold


def load_run(directory: str | Path, name: str | None = None) -> Run:
    store = RunStore(Path(directory))
    manifest = store.existing_manifest()
    if manifest is None:
        raise EvalkitError(f"{directory}: not an evalkit run (no manifest.json)")
    rows = []
    for session_rows in store.scores().values():
        for row in session_rows:
            rating = None if not row.valid or not row.distribution else int(max(row.distribution, key=row.distribution.get))
            rows.append({"session_id": row.session_id, "source_id": row.source_id, "rubric": row.rubric,
                         "item": row.item, "value": row.expected if row.valid else None, "rating": rating,
                         "valid": row.valid})
    scores = pd.DataFrame(rows, columns=["session_id", "source_id", "rubric", "item", "value", "rating", "valid"])
    flagged = frozenset(sid for sid, row in store.adherence().items() if row.flagged)
    return Run(name=name or Path(directory).name, directory=Path(directory), manifest=manifest,
               transcripts=store.transcripts(), scores=scores, flagged=flagged)


def incompatibilities(runs: list[Run]) -> list[str]:
    """What differs between runs that must agree for their scores to be compared."""
    first = runs[0].manifest.config
    problems = []
    for run in runs[1:]:
        config = run.manifest.config
        if (config.suite.id, config.suite.version) != (first.suite.id, first.suite.version):
            problems.append(f"suite: {runs[0].name} has {first.suite.id} {first.suite.version}, "
                            f"{run.name} has {config.suite.id} {config.suite.version}")
        mine = {(r.id, r.version) for r in first.rubrics}
        theirs = {(r.id, r.version) for r in config.rubrics}
        if mine != theirs:
            problems.append(f"rubrics: {runs[0].name} has {sorted(mine)}, {run.name} has {sorted(theirs)}")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        problems.append(f"condition names repeat ({', '.join(names)}); name runs distinctly")
    return problems


def session_key(transcript: Transcript) -> str:
    return f"{transcript.source_id}#{transcript.replicate}"


def session_table(runs: list[Run], rubrics: list[Rubric], exclude_flagged: bool = False) -> pd.DataFrame:
    """Long table of every metric (items and composites) per condition and session.

    Columns: condition, session, persona, metric, value (NaN when invalid). Metric names are
    `<rubric>.<item or composite>`. With `exclude_flagged`, sessions whose simulated client fell below
    the adherence threshold are left out.
    """
    frames = []
    for run in runs:
        if run.scores.empty:
            continue
        for rubric in rubrics:
            mine = run.scores[run.scores["rubric"] == rubric.id]
            for session_id, group in mine.groupby("session_id", sort=False):
                if exclude_flagged and session_id in run.flagged:
                    continue
                values = {item: (None if pd.isna(v) else float(v)) for item, v in zip(group["item"], group["value"], strict=True)}
                values.update(rubric.composite_scores(values))
                transcript = run.transcripts.get(session_id)
                persona = transcript.source_id if transcript else group["source_id"].iloc[0]
                key = session_key(transcript) if transcript else session_id
                frames.extend({"condition": run.name, "session": key, "persona": persona,
                               "metric": f"{rubric.id}.{score}", "value": value} for score, value in values.items())
    table = pd.DataFrame(frames, columns=["condition", "session", "persona", "metric", "value"])
    table["value"] = pd.to_numeric(table["value"])
    return table


def rubrics_of(runs: list[Run]) -> list[Rubric]:
    """The rubrics the runs were scored on (built-in ones are loaded by id)."""
    out = []
    for ref in runs[0].manifest.config.rubrics:
        rubric = load_rubric(ref.id)
        if rubric.version != ref.version:
            raise EvalkitError(f"{runs[0].directory}: scored with {ref.id} {ref.version}, but this evalkit has {rubric.version}")
        out.append(rubric)
    return out


def metric_better(rubrics: list[Rubric], metric: str) -> str:
    """'higher' or 'lower': which direction is better for a metric."""
    rubric_id, score = metric.split(".", 1)
    rubric = next(r for r in rubrics if r.id == rubric_id)
    return rubric.better(score)
