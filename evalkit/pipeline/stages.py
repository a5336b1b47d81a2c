"""The stages of a run after preparation, each readable on its own: simulate sessions, score them, summarise.

Each stage reads and writes the run directory only through `RunDir`, so any stage can run again on a stored
run (resume, rescore). The scoring plan says which rows every session must end up with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.analysis.sessions import session_views
from evalkit.analysis.summary import summarise
from evalkit.backends.base import Backend
from evalkit.backends.replicas import routing_key
from evalkit.content.suites import LoadedSuite
from evalkit.core.concurrency import run_bounded
from evalkit.core.progress import Reporter
from evalkit.core.types import SamplingParams
from evalkit.judging import Judge, JudgeSettings, RubricScorer, Scorer, make_scorer
from evalkit.judging.adherence import AdherenceScorer
from evalkit.judging.safety import RiskSurfacedScorer
from evalkit.simulation.engine import SessionEngine
from evalkit.store.records import Inclusion, RunCounts, Summary, Transcript
from evalkit.store.rundir import RunDir, ScoreValue


@dataclass
class ScoringPlan:
    """The scorers of a run and the rows each session must end up with."""

    scorers: list[Scorer]
    suite: LoadedSuite

    @classmethod
    def of(cls, loaded: LoadedSuite, settings: JudgeSettings, *, simulated_client: bool,
           options: dict[str, Any] | None = None) -> ScoringPlan:
        """`options`: run-level settings for the scorers that take them (emotion_model, reward_endpoint, ...)."""
        options = options or {}
        scorers: list[Scorer] = [make_scorer(use.scorer, loaded, rubric, **options) if use.scorer else
                                 RubricScorer(rubric, applies_to=use.applies_to, layout=settings.layout)
                                 for use, rubric in loaded.rubric_uses]
        if loaded.suite.unit == "session":
            critical = [r for r in loaded.rubrics if r.critical_items]
            if critical:  # asked within that rubric's prompt prefix, which the prefix cache then serves
                scorers.append(RiskSurfacedScorer(critical[0]))
            if settings.adherence_threshold is not None and simulated_client:
                scorers.append(AdherenceScorer())
        scorers += [make_scorer(name, loaded, **options) for name in loaded.suite.scorers]
        return cls(scorers=scorers, suite=loaded)

    @property
    def uses_judge(self) -> bool:
        return any(getattr(s, "uses_judge", True) for s in self.scorers)

    def expected(self, transcript: Transcript) -> dict[Scorer, set[tuple[str, str]]]:
        source = self.suite.source(transcript.source_id)
        return {s: {(s.id, k) for k in s.keys(transcript, source)} for s in self.scorers}

    def describe(self) -> list[str]:
        """Each scorer's id/version, and where it reads from when that is not the judge (e.g. a reward server)."""
        return [f"{s.id}/{s.version}" + (f"@{s.provenance}" if getattr(s, "provenance", None) else "") for s in self.scorers]

    async def aclose(self) -> None:
        """Close what scorers opened (e.g. a reward server connection)."""
        for scorer in self.scorers:
            if hasattr(scorer, "aclose"):
                await scorer.aclose()


def note_extent(done: set[str], cases: list, directory: Path, reporter: Reporter) -> int:
    """How many of `cases` the directory already holds (`done`: its session ids); says so when it holds sessions
    beyond those asked for, since they stay in the summary."""
    resumed = sum(c.session_id in done for c in cases)
    if len(done) > resumed:
        reporter.note(f"{directory} already holds {len(done)} sessions and {len(cases)} were asked for: the summary "
                      f"covers all {len(done) + len(cases) - resumed} (a run is extended by asking for more, never shrunk)")
    return resumed


async def simulate(loaded: LoadedSuite, store: RunDir, cases: list, *, therapist: Backend, client, turns: int,
                   sampling: SamplingParams, concurrency: int, reporter: Reporter) -> None:
    """Run every case that has no transcript yet; each transcript is appended as soon as its session ends."""
    done = set(store.sources())
    reporter.sessions(len(cases), note_extent(done, cases, store.directory, reporter))
    engine = SessionEngine(suite_id=loaded.suite.id, system_prompt=loaded.suite.therapist_system_prompt, turns=turns,
                           therapist=therapist, client=client, therapist_sampling=sampling, reporter=reporter,
                           formulation=loaded.wants_formulation)

    def keep(case, transcript: Transcript) -> None:
        store.append_transcript(transcript)
        reporter.session_done(transcript)

    await run_bounded((c for c in cases if c.session_id not in done), engine.run_case, concurrency=concurrency, on_result=keep)


async def score(store: RunDir, plan: ScoringPlan, judge: Judge, *, concurrency: int, reporter: Reporter,
                rejudge_invalid: bool = False) -> None:
    """Write every expected row that is missing (and, when asked, re-ask every invalid one). The latest row wins."""
    written = store.written_keys()

    def todo(transcript: Transcript) -> dict[Scorer, set[tuple[str, str]]]:
        have = written.get(transcript.session_id, {})
        wanted = {}
        for scorer, keys in plan.expected(transcript).items():
            need = {k for k in keys if k not in have or (rejudge_invalid and not have[k])}
            if need:
                wanted[scorer] = need
        return wanted

    total = done = 0
    for transcript in store.iter_transcripts():
        for keys in plan.expected(transcript).values():
            total += len(keys)
            done += sum(k in written.get(transcript.session_id, {}) and (written[transcript.session_id][k] or not rejudge_invalid) for k in keys)
    reporter.scoring(total, done)

    def pending() -> Iterator[tuple[Transcript, dict]]:
        for transcript in store.iter_transcripts():
            wanted = todo(transcript)
            if wanted:
                yield transcript, wanted

    async def work(job: tuple[Transcript, dict]) -> list:
        transcript, wanted = job
        source = plan.suite.source(transcript.source_id)
        with routing_key(transcript.session_id):  # one replica's prefix cache holds the shared transcript
            results = await asyncio.gather(*(scorer.score(transcript, source, judge, only={item for _, item in keys})
                                             for scorer, keys in wanted.items()))
        return [row for scorer, rows in zip(wanted, results, strict=True) for row in rows
                if (row.rubric, row.item) in wanted[scorer]]

    def keep(job, rows: list) -> None:
        store.append_scores(rows)
        reporter.rows_scored(len(rows))

    try:
        await run_bounded(pending(), work, concurrency=concurrency, on_result=keep)
    finally:
        await plan.aclose()


def count(store: RunDir, plan: ScoringPlan, values: dict[str, list[ScoreValue]] | None = None) -> RunCounts:
    """What the run directory holds, counted from its files: the one source of the manifest's and summary's counts."""
    values = store.score_values() if values is None else values
    counts = RunCounts()
    for transcript in store.iter_transcripts():
        have = {(v.rubric, v.item) for v in values.get(transcript.session_id, ())}
        missing = len(set().union(*plan.expected(transcript).values()) - have)
        counts.sessions += 1
        counts.sessions_scored += missing == 0
        counts.missing_score_rows += missing
        counts.truncated_sessions += transcript.truncated
        counts.reasoning_turns += sum(t.reasoning is not None for t in transcript.turns)
        for turn in transcript.turns:
            used = counts.tokens.setdefault(turn.role, {"prompt": 0, "generated": 0})
            used["prompt"] += turn.prompt_tokens or 0
            used["generated"] += turn.completion_tokens or 0
    for rows in values.values():
        counts.score_rows += len(rows)
        counts.invalid_score_rows += sum(not v.valid for v in rows)
    return counts


def summarise_run(store: RunDir, plan: ScoringPlan, settings: JudgeSettings, inclusion: Inclusion) -> Summary:
    """summary.json and the run's tables, from what is on disk."""
    values = store.score_values()
    loaded = plan.suite
    views = list(session_views(store.iter_transcripts(), values, loaded, inclusion=inclusion, threshold=settings.adherence_threshold))
    counts = count(store, plan, values)
    counts.flagged_sessions = sum(v.flagged for v in views)
    summary = summarise(store.name, loaded.suite.id, [(r, loaded.applies_to(r.id)) for r in loaded.rubrics], views, counts,
                        inclusion=inclusion, adherence_threshold=settings.adherence_threshold)
    summary.invalid_reasons = store.invalid_reasons() if counts.invalid_score_rows else {}
    if any(s.id == "reference" for s in plan.scorers):
        summary.reference = _reference_summary(store, plan, values)
    store.write_summary(summary)
    from evalkit.analysis.tables import write_tables

    write_tables(store.directory)
    return summary


def _reference_summary(store: RunDir, plan: ScoringPlan, values) -> Any:
    from evalkit.judging.reference import ReferenceScorer, corpus_summary, reply_of

    scorer = next(s for s in plan.scorers if isinstance(s, ReferenceScorer))
    pairs = []
    for transcript in store.iter_transcripts():
        reply, item = reply_of(transcript), plan.suite.source(transcript.source_id)
        if reply is not None and item is not None:
            pairs.append((reply, item.reply))
    emotion = [v.expected for rows in values.values() for v in rows
               if v.rubric == "reference" and v.item == "emotion" and v.valid and v.expected is not None]
    return corpus_summary(pairs, emotion, scorer.label_map, str(scorer.emotion_model) if scorer.emotion_model else None)
