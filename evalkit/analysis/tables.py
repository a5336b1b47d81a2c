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

from evalkit.analysis.runs import inclusion_of
from evalkit.analysis.sessions import session_frame, session_views
from evalkit.store.rundir import RunDir

SCORE_COLUMNS = ["run", "model", "suite", "session", "session_id", "persona", "archetype", "risk_type", "replicate",
                 "rubric", "item", "kind", "score", "valid", "reason", "judge", "flagged", "risk_surfaced", "excluded"]


@dataclass(frozen=True)
class RunTables:
    scores: pd.DataFrame
    """One row per run x session x item or composite (kind: item, composite, check)."""
    sessions: pd.DataFrame
    """One row per run x session: `analysis.sessions.SESSION_COLUMNS`, then every metric as a column."""
    summary: pd.DataFrame
    """One row per run x rubric x item or composite: mean, 95% CI, n, invalid, direction of good."""


def run_tables(directory: str | Path, *, include_flagged: bool | None = None) -> RunTables:
    """A run's tables, its sessions seen through `analysis.sessions` (the run's inclusion policy, or the override)."""
    store = RunDir(directory)
    manifest = store.require_manifest()
    loaded = store.suite()
    model = manifest.roles["therapist"].model
    rubrics = {r.id for r in loaded.rubrics}
    latest = store.scores()
    views = list(session_views(store.iter_transcripts(), latest, loaded, inclusion=inclusion_of(manifest, loaded, include_flagged),
                               threshold=manifest.config.adherence_threshold))
    rows = []
    for view in views:
        facts = {"run": manifest.run_id, "model": model, "suite": loaded.suite.id, "session": view.key,
                 "session_id": view.session_id, "persona": view.source_id, "archetype": view.archetype,
                 "risk_type": view.risk_type, "replicate": view.replicate}
        flags = {"flagged": view.flagged, "risk_surfaced": view.risk_surfaced, "excluded": view.excluded}
        rows += [{**facts, "rubric": row.rubric, "item": row.item, "kind": "item" if row.rubric in rubrics else "check",
                  "score": row.expected, "valid": row.valid, "reason": row.reason, "judge": row.judge, **flags}
                 for row in latest.get(view.session_id, [])]
        composites = {f"{r.id}.{c.id}" for r in loaded.rubrics for c in r.composites}
        rows += [{**facts, "rubric": metric.split(".", 1)[0], "item": metric.split(".", 1)[1], "kind": "composite",
                  "score": value, "valid": value is not None, "reason": None, "judge": None, **flags}
                 for metric, value in view.values.items() if metric in composites]
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
    return RunTables(scores=pd.DataFrame(rows, columns=SCORE_COLUMNS),
                     sessions=session_frame(views, run=manifest.run_id, model=model, suite=loaded.suite.id),
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
