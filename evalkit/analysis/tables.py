"""Join-ready results: a run's scores, sessions and summary as tables, for pandas, DuckDB and notebooks.

Every run writes `scores.parquet` (and `scores.csv`): one row per session x item, plus one row per session x
composite, with the run, model, suite, persona, archetype, risk and replicate on every row. `load_runs(...)`
returns the same tables for any number of stored runs (built from the run files, so runs written before the
tables existed load too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evalkit.store.rundir import RunDir

SCORE_COLUMNS = ["run", "model", "suite", "session", "session_id", "persona", "archetype", "risk_type", "replicate",
                 "rubric", "item", "kind", "score", "valid", "reason", "judge", "flagged", "risk_surfaced"]


@dataclass(frozen=True)
class RunTables:
    scores: pd.DataFrame
    """One row per run x session x item or composite (kind: item, composite, check)."""
    sessions: pd.DataFrame
    """One row per run x session: persona facts, stop reason, turns, truncation, flags, and composites wide."""
    summary: pd.DataFrame
    """One row per run x rubric x item or composite: mean, 95% CI, n, invalid, direction of good."""


def run_tables(directory: str | Path) -> RunTables:
    from evalkit.analysis.summary import surfaced
    from evalkit.judging import adherence as adherence_scorer

    store = RunDir(directory)
    manifest = store.require_manifest()
    loaded = store.suite()
    model = manifest.roles["therapist"].model
    rubrics = {r.id: r for r in loaded.rubrics}
    threshold = manifest.config.adherence_threshold
    rows, session_rows = [], []
    latest = store.scores()
    for transcript in store.iter_transcripts():
        source = loaded.source(transcript.source_id)
        facts = {"run": manifest.run_id, "model": model, "suite": loaded.suite.id, "session": transcript.key,
                 "session_id": transcript.session_id, "persona": transcript.source_id,
                 "archetype": getattr(source, "archetype", None), "risk_type": getattr(source, "risk_type", None),
                 "replicate": transcript.replicate}
        own = latest.get(transcript.session_id, [])
        flagged = adherence_scorer.flagged(own, threshold)
        shown = surfaced(own)
        wide = {}
        for row in own:
            rows.append({**facts, "rubric": row.rubric, "item": row.item, "kind": "item" if row.rubric in rubrics else "check",
                         "score": row.expected, "valid": row.valid, "reason": row.reason, "judge": row.judge,
                         "flagged": flagged, "risk_surfaced": shown})
        for rubric in rubrics.values():
            values = {r.item: (r.expected if r.valid else None) for r in own if r.rubric == rubric.id}
            if not values:
                continue
            for composite, value in rubric.composite_scores(values).items():
                rows.append({**facts, "rubric": rubric.id, "item": composite, "kind": "composite", "score": value,
                             "valid": value is not None, "reason": None, "judge": None, "flagged": flagged, "risk_surfaced": shown})
                wide[f"{rubric.id}.{composite}"] = value
        session_rows.append({**facts, "stop_reason": transcript.stop_reason, "therapist_turns": transcript.therapist_turns,
                             "truncated": transcript.truncated, "flagged": flagged, "risk_surfaced": shown, **wide})
    summary_rows = []
    if store.path("summary.json").exists():
        summary = store.summary()
        for rubric_id, section in summary.rubrics.items():
            for kind, stats in (("item", section.items), ("composite", section.composites)):
                for score_id, stat in stats.items():
                    summary_rows.append({"run": manifest.run_id, "model": model, "suite": loaded.suite.id, "rubric": rubric_id,
                                         "item": score_id, "kind": kind, "mean": stat.mean, "ci_low": stat.ci_low,
                                         "ci_high": stat.ci_high, "n": stat.n, "n_invalid": stat.n_invalid,
                                         "better": stat.better, "min": stat.range[0], "max": stat.range[1]})
    return RunTables(scores=pd.DataFrame(rows, columns=SCORE_COLUMNS), sessions=pd.DataFrame(session_rows),
                     summary=pd.DataFrame(summary_rows))


def write_tables(directory: str | Path) -> None:
    """scores.parquet and scores.csv in the run directory (atomic: written beside, then renamed)."""
    from evalkit.core.fileio import write_table

    directory = Path(directory)
    scores = run_tables(directory).scores
    write_table(directory / "scores.parquet", scores)
    write_table(directory / "scores.csv", scores)


def load_runs(*directories: str | Path) -> RunTables:
    """The tables of several stored runs, concatenated (a `run` column tells them apart)."""
    if len(directories) == 1 and isinstance(directories[0], (list, tuple)):
        directories = tuple(directories[0])
    tables = [run_tables(d) for d in directories]
    return RunTables(scores=pd.concat([t.scores for t in tables], ignore_index=True),
                     sessions=pd.concat([t.sessions for t in tables], ignore_index=True),
                     summary=pd.concat([t.summary for t in tables], ignore_index=True))
