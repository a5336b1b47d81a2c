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
from evalkit.analysis.summary import critical_failure
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
    def judged(self) -> bool:
        return self.suite.judged

    @property
    def judge_identity(self) -> str | None:
        """The judge's identity, or None when no judge scored the run."""
        judge = self.manifest.roles.get("judge")
        if not self.judged or judge is None:
            return None
        return judge.identity or judge.model_hash or judge.model

    @property
    def therapist_identity(self) -> str:
        therapist = self.manifest.roles["therapist"]
        return self.manifest.config.roles.get("therapist") or therapist.identity or therapist.model_hash or therapist.model


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


def judge_fitness_warning(manifest: Manifest, *, judged: bool = True) -> str | None:
    """What a reader of this run's scores must know about its judge's fitness check, or None when it passed or no
    LLM judge scored the run (`judged` False: reference suites are scored against reference replies)."""
    if not judged:
        return None
    check = manifest.judge_check
    if check is None:
        return "the judge has not been checked on evalkit's vignettes (evalkit judge check, then --judge-check)"
    if check.get("verdict") != "fit":
        unfit = [r for r, i in check.get("instruments", {}).items() if i.get("verdict") != "fit"]
        return f"the judge FAILED its fitness check on the vignettes ({', '.join(unfit)}): its scores are not evidence"
    return None


def inclusion_of(manifest: Manifest, loaded: LoadedSuite, include_flagged: bool | None = None) -> Inclusion:
    """The run's recorded inclusion policy (the suite's truncation rule always applies), with a command's override."""
    recorded = manifest.inclusion
    return Inclusion(include_flagged=recorded.include_flagged if include_flagged is None else include_flagged,
                     exclude_truncated=loaded.suite.exclude_truncated)


def _sampling(params, *, seed: bool = False) -> dict:
    """Sampling settings as compared across runs (the seed only says which draw, not how replies are drawn)."""
    return params.model_dump(exclude=None if seed else {"seed"}) if params is not None else {}


def _settings(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in keys)


def compatibility(runs: list[Run]) -> tuple[list[str], list[str]]:
    """(refusals, warnings): what differs between runs, naming each difference.

    Refused, because scores could not be compared: suite or rubric versions and content, session length (turns), the
    simulated client's model (when named for both runs) or its sampling settings, the judge or its method (the way
    scores are read from it). Warned: the therapist's sampling settings and system prompt (part of the condition under
    test, but say so), simulated clients that differ because each run's client defaulted to its own therapist
    (self-play), a role served by a different backend kind, and the persona-adherence threshold."""
    first, base = runs[0], runs[0].manifest.config
    refuse, warn = [], []
    session = first.suite.suite.unit == "session"
    for run in runs[1:]:
        config, pair = run.manifest.config, f"{first.name} has"
        if (config.suite.id, config.suite.version) != (base.suite.id, base.suite.version):
            refuse.append(f"suite: {pair} {base.suite.id} {base.suite.version}, {run.name} has {config.suite.id} {config.suite.version}")
        mine = {(r.id, r.version, r.sha256) for r in base.rubrics}
        theirs = {(r.id, r.version, r.sha256) for r in config.rubrics}
        if mine != theirs:
            refuse.append(f"rubrics: {pair} {sorted((i, v) for i, v, _ in mine)}, {run.name} has {sorted((i, v) for i, v, _ in theirs)}"
                          + (" (same versions, different content)" if {x[:2] for x in mine} == {x[:2] for x in theirs} else ""))
        if session and config.turns != base.turns:
            refuse.append(f"session length: {pair} {base.turns} turns, {run.name} has {config.turns}")
        if session:
            client_a, client_b = base.roles.get("client"), config.roles.get("client")
            defaulted = any(r.manifest.roles.get("client") is not None and r.manifest.roles["client"].defaulted_to_therapist
                            for r in (first, run))
            if client_a != client_b:
                text = f"simulated client: {pair} {client_a}, {run.name} has {client_b}"
                if defaulted:
                    warn.append(text + " (each run's client defaulted to its own therapist, self-play: differences mix the "
                                       "therapist with the client it talked to)")
                else:
                    refuse.append(text)
            if (difference := _settings(_sampling(base.sampling.get("client")), _sampling(config.sampling.get("client")))):
                refuse.append(f"simulated client sampling: {first.name} vs {run.name}: {difference}")
            kinds = [r.manifest.roles.get("client") for r in (first, run)]
            if client_a == client_b and all(kinds) and kinds[0].kind != kinds[1].kind:  # type: ignore[union-attr]
                warn.append(f"simulated client backend: {pair} {kinds[0].kind}, {run.name} has {kinds[1].kind}")  # type: ignore[union-attr]
        if first.judged and run.judged:
            if first.judge_identity != run.judge_identity:
                refuse.append(f"the runs were scored by different judges ({first.name}: {first.judge_identity}, {run.name}: "
                              f"{run.judge_identity}); rescore one with evalkit rescore")
            elif config.judge_method != base.judge_method:
                refuse.append(f"judge method: {pair} '{base.judge_method}', {run.name} has '{config.judge_method}'")
            kinds = [r.manifest.roles.get("judge") for r in (first, run)]
            if first.judge_identity == run.judge_identity and all(kinds) and kinds[0].kind != kinds[1].kind:  # type: ignore[union-attr]
                warn.append(f"judge backend: {pair} {kinds[0].kind}, {run.name} has {kinds[1].kind}")  # type: ignore[union-attr]
        if (difference := _settings(_sampling(base.sampling.get("therapist")), _sampling(config.sampling.get("therapist")))):
            warn.append(f"therapist sampling differs ({first.name} vs {run.name}: {difference}): part of what is compared")
        if config.therapist_system_prompt_sha256 != base.therapist_system_prompt_sha256:
            warn.append(f"therapist system prompt differs between {first.name} and {run.name}: part of what is compared")
        if config.adherence_threshold != base.adherence_threshold:
            warn.append(f"persona-adherence threshold: {pair} {base.adherence_threshold}, {run.name} has {config.adherence_threshold}")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        refuse.append(f"condition names repeat ({', '.join(names)}); name runs distinctly")
    return refuse, warn


def left_out(*runs: Run) -> str:
    """Why sessions are missing from the analysis, when some are: it is often why a metric has no sessions."""
    parts = [f"{run.name}: {n} {why}" for run in runs for why, n in run.excluded.items()]
    return f" (sessions left out: {'; '.join(parts)}; --include-flagged keeps flagged ones)" if parts else ""


def incompatibilities(runs: list[Run]) -> list[str]:
    """What differs between runs that must agree for their scores to be compared (`compatibility`'s refusals)."""
    return compatibility(runs)[0]


CRITICAL = "critical_failure"
"""`<rubric>.critical_failure`: 1 when any critical item of the rubric failed in a session where the risk surfaced, else 0."""


def critical_rows(runs: list[Run]) -> pd.DataFrame:
    """`<rubric>.critical_failure` per condition and session, for every rubric with critical items: 1.0 when a critical
    item failed, 0.0 when none did, NaN when one could not be assessed and none failed; only sessions the inclusion
    policy keeps and in which the persona's risk surfaced (elsewhere the session says nothing about safety)."""
    rows = []
    for run in runs:
        for rubric in (r for r in run.rubrics if r.critical_items):
            for view in run.views:
                values = view.rubric_values(rubric.id)
                if view.excluded or not values or view.risk_surfaced is not True:
                    continue
                failed = critical_failure(rubric, values)
                rows.append({"condition": run.name, "session": view.key, "persona": view.source_id,
                             "metric": f"{rubric.id}.{CRITICAL}", "value": None if failed is None else float(failed)})
    frame = pd.DataFrame(rows, columns=["condition", "session", "persona", "metric", "value"])
    frame["value"] = pd.to_numeric(frame["value"])
    return frame


def metric_rows(runs: list[Run], *, critical: bool = True) -> pd.DataFrame:
    """Long table of every metric (items and composites, and with `critical` each critical-item rubric's
    `critical_failure`) per condition and session, for the sessions each run's inclusion policy keeps: condition,
    session, persona, metric, value (NaN when invalid)."""
    table = metric_table((run.name, run.views) for run in runs)
    if not critical:
        return table
    extra = critical_rows(runs)
    return pd.concat([table, extra], ignore_index=True) if len(extra) else table


def rubrics_of(runs: list[Run]) -> list[Rubric]:
    """The rubrics the runs were scored on, from the first run's own copy (compatibility is checked separately)."""
    if not runs:
        raise ConfigError("no runs given")
    return runs[0].rubrics


def metric_better(rubrics: list[Rubric], metric: str) -> str:
    """'higher' or 'lower': which direction is better for a metric."""
    rubric_id, score = metric.split(".", 1)
    if score == CRITICAL:
        return "lower"
    rubric = next(r for r in rubrics if r.id == rubric_id)
    return rubric.better(score)


def metric_name(rubrics: list[Rubric], metric: str) -> str:
    """A metric's readable name."""
    rubric_id, score = metric.split(".", 1)
    rubric = next((r for r in rubrics if r.id == rubric_id), None)
    if score == CRITICAL:
        return "Critical failure (share of sessions where the risk surfaced)"
    if rubric is None:
        return metric
    return next((c.name for c in rubric.composites if c.id == score), None) or next(
        (i.name for i in rubric.items if i.id == score), metric)


def known_metric(rubrics: list[Rubric], metric: str) -> bool:
    """Whether `metric` names an item, a composite or (for a rubric with critical items) the critical-failure share."""
    rubric_id, _, score = metric.partition(".")
    rubric = next((r for r in rubrics if r.id == rubric_id), None)
    if rubric is None:
        return False
    return (score == CRITICAL and bool(rubric.critical_items)) or score in {i.id for i in rubric.items} | {
        c.id for c in rubric.composites}
