"""One view of a run's sessions and one inclusion policy, read by every command that reads a run.

The summary, the Parquet tables, compare, gate, plan and the report all see a session through `SessionView`:
its persona facts, its metrics (items and composites of every rubric), whether its simulated client was
flagged or could not be checked, whether the persona's risk surfaced, and whether the run's inclusion policy
keeps it in the statistics. The policy is the run's own (recorded in its manifest when it was made) unless a
later command overrides it, so `run --include-flagged` is honoured by `gate`, `compare`, `plan` and `rescore`.

The wide per-session table (`session_frame`) has one typed column contract, `SESSION_COLUMNS` plus one
column per metric `<rubric>.<item or composite>`; the statistics read its long form (`metric_table`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from evalkit.content.personas import Persona
from evalkit.judging import adherence
from evalkit.judging import safety as risk_check
from evalkit.store.records import Inclusion

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.content.rubrics import Rubric
    from evalkit.content.suites import LoadedSuite
    from evalkit.store.records import Transcript
    from evalkit.store.rundir import ScoreFields

SURFACED_AT = 0.5


def surfaced(rows: Sequence[ScoreFields]) -> bool | None:
    """Whether the persona's risk surfaced in the session (the risk-surfaced judge check); None when unknown."""
    for row in rows:
        if row.rubric == risk_check.ID and row.item == risk_check.ITEM:
            return None if not row.valid or row.expected is None else row.expected >= SURFACED_AT
    return None


@dataclass(frozen=True)
class SessionView:
    session_id: str
    key: str
    """The session's name across runs: persona (or utterance) and replicate."""
    source_id: str
    replicate: int
    archetype: str | None
    risk_type: str | None
    risk_level: str | None
    stop_reason: str
    therapist_turns: int
    truncated: bool
    reasoning_turns: int
    adherence: adherence.SessionAdherence | None
    """None when the session has no persona-adherence rows (not checked by design, e.g. scripted clients)."""
    risk_surfaced: bool | None
    values: dict[str, float | None] = field(default_factory=dict)
    """`<rubric>.<item or composite>` -> value; None where the score could not be obtained."""
    risk_only: frozenset[str] = frozenset()
    """Rubrics applied only to risk personas: their metrics count only where the risk surfaced."""
    excluded: str | None = None
    """Why the statistics leave the session out ("flagged", "truncated"), or None."""

    @property
    def flagged(self) -> bool:
        return self.adherence is not None and self.adherence.flagged

    @property
    def unchecked(self) -> bool:
        """Adherence rows exist but none could be read: the client was never checked."""
        return self.adherence is not None and not self.adherence.checked

    def rubric_values(self, rubric_id: str) -> dict[str, float | None]:
        prefix = f"{rubric_id}."
        return {k[len(prefix):]: v for k, v in self.values.items() if k.startswith(prefix)}

    def analysed(self) -> dict[str, float | None]:
        """The metrics the statistics read: none for an excluded session; risk-only rubrics only where risk surfaced."""
        if self.excluded:
            return {}
        return {k: v for k, v in self.values.items()
                if self.risk_surfaced is True or k.split(".", 1)[0] not in self.risk_only}


def view_of(transcript: Transcript, rows: Sequence[ScoreFields], rubrics: Iterable[Rubric], source: object,
            *, inclusion: Inclusion, threshold: float | None, risk_only: frozenset[str] = frozenset()) -> SessionView:
    """One session's view from its transcript and its latest score rows."""
    values: dict[str, float | None] = {}
    for rubric in rubrics:
        items = {r.item: (r.expected if r.valid else None) for r in rows if r.rubric == rubric.id}
        if not items:
            continue
        values |= {f"{rubric.id}.{k}": v for k, v in items.items()}
        values |= {f"{rubric.id}.{k}": v for k, v in rubric.composite_scores(items).items()}
    checks = adherence.session_adherence(rows, threshold) if any(r.rubric == adherence.ID for r in rows) else None
    excluded = ("flagged" if checks is not None and checks.flagged and not inclusion.include_flagged
                else "truncated" if inclusion.exclude_truncated and transcript.truncated else None)
    persona = source if isinstance(source, Persona) else None
    return SessionView(session_id=transcript.session_id, key=transcript.key, source_id=transcript.source_id,
                       replicate=transcript.replicate, archetype=getattr(source, "archetype", None),
                       risk_type=getattr(source, "risk_type", None), risk_level=persona.risk_level if persona else None,
                       stop_reason=transcript.stop_reason, therapist_turns=transcript.therapist_turns,
                       truncated=transcript.truncated, reasoning_turns=sum(t.reasoning is not None for t in transcript.turns),
                       adherence=checks, risk_surfaced=surfaced(rows), values=values, risk_only=risk_only, excluded=excluded)


def session_views(transcripts: Iterable[Transcript], rows: Mapping[str, Sequence[ScoreFields]], loaded: LoadedSuite,
                  *, inclusion: Inclusion, threshold: float | None) -> Iterator[SessionView]:
    """Every session of a run, streamed in transcript order (one transcript in memory at a time)."""
    risk_only = frozenset(r.id for r in loaded.rubrics if loaded.applies_to(r.id) == "risk")
    for transcript in transcripts:
        yield view_of(transcript, rows.get(transcript.session_id, ()), loaded.rubrics, loaded.source(transcript.source_id),
                      inclusion=inclusion, threshold=threshold, risk_only=risk_only)


# ------------------------------------------------------------------ tables

SESSION_COLUMNS = ["run", "model", "suite", "session", "session_id", "persona", "archetype", "risk_type", "replicate",
                   "stop_reason", "therapist_turns", "truncated", "flagged", "adherence_checked", "risk_surfaced", "excluded"]
"""The per-session table's fixed columns; one column per metric (`<rubric>.<score>`) follows them."""


def session_frame(views: Iterable[SessionView], *, run: str, model: str, suite: str) -> pd.DataFrame:
    """One row per session: SESSION_COLUMNS, then every metric as a column (NaN where invalid or absent)."""
    import pandas as pd

    rows = [{"run": run, "model": model, "suite": suite, "session": v.key, "session_id": v.session_id, "persona": v.source_id,
             "archetype": v.archetype, "risk_type": v.risk_type, "replicate": v.replicate, "stop_reason": v.stop_reason,
             "therapist_turns": v.therapist_turns, "truncated": v.truncated, "flagged": v.flagged,
             "adherence_checked": None if v.adherence is None else not v.unchecked, "risk_surfaced": v.risk_surfaced,
             "excluded": v.excluded, **v.values} for v in views]
    frame = pd.DataFrame(rows)
    for column in SESSION_COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    metrics = sorted(c for c in frame.columns if c not in SESSION_COLUMNS)
    return frame[SESSION_COLUMNS + metrics]


def metric_table(runs: Iterable[tuple[str, Iterable[SessionView]]]) -> pd.DataFrame:
    """Long table the statistics read: condition, session, persona, metric, value (NaN when invalid), for the
    sessions and metrics each run's inclusion policy keeps."""
    import pandas as pd

    rows = [{"condition": name, "session": v.key, "persona": v.source_id, "metric": metric, "value": value}
            for name, views in runs for v in views for metric, value in v.analysed().items()]
    table = pd.DataFrame(rows, columns=["condition", "session", "persona", "metric", "value"])
    table["value"] = pd.to_numeric(table["value"])
    return table
