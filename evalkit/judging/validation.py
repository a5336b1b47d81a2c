"""`evalkit judge validate`: how far does a judge agree with trained human raters?

Ratings (JSONL, one row per material x item x rater):
    {"material_id": "m1", "rubric": "tes", "item": "warmth", "rater": "r1", "score": 5,
     "turns": [{"role": "client", "content": "..."}, {"role": "therapist", "content": "..."}]}
A material's conversation is given once, in any of its rows, as `turns`, or as a pointer to a stored
run: "run": "results/x", "session_id": "persona#0". Several raters per item are expected.

The judge scores every rated (material, item) exactly as it does in a run. Agreement is reported per
item (the judge's expected score, and its nearest level for the categorical statistics) and per
composite (area sums, totals: continuous statistics only), judge against the human mean, and human
against human beside it, each with bootstrap CIs over materials.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from evalkit.content.rubrics import Rubric, load_rubric
from evalkit.core.errors import ConfigError
from evalkit.core.fileio import ensure_directory, read_text, write_atomic
from evalkit.core.yamlio import describe_validation_error
from evalkit.judging.judge import Judge, JudgeSettings
from evalkit.judging.scorer import RubricScorer
from evalkit.statistics.agreement import bootstrap_ci, human_human, judge_human
from evalkit.store.records import Transcript, Turn
from evalkit.store.rundir import RunDir


class RatingRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    material_id: str
    rubric: str
    item: str
    rater: str
    score: float
    turns: list[Turn] | None = None
    run: str | None = None
    session_id: str | None = None

    @model_validator(mode="after")
    def _pointer_complete(self) -> RatingRow:
        if (self.run is None) != (self.session_id is None):
            raise ValueError("'run' and 'session_id' go together")
        return self


def load_ratings(path: Path) -> tuple[list[RatingRow], dict[str, Transcript], dict[str, Rubric]]:
    rows, rubrics, materials = [], {}, {}
    lines = read_text(path, what="ratings file").split("\n")
    now = datetime.now(timezone.utc)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = RatingRow.model_validate_json(line)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(f"{path}:{number}", exc)) from None
        if row.rubric not in rubrics:
            try:
                rubrics[row.rubric] = load_rubric(row.rubric)
            except ConfigError as exc:
                raise ConfigError(f"{path}:{number}: field 'rubric': {exc}") from None
        rubric = rubrics[row.rubric]
        try:
            scale = rubric.scale_of(rubric.item(row.item))
        except KeyError:
            raise ConfigError(f"{path}:{number}: field 'item': '{row.item}' is not an item of {rubric.id}") from None
        if not scale.min <= row.score <= scale.max:
            raise ConfigError(f"{path}:{number}: field 'score': {row.score:g} is outside {rubric.id}'s scale {scale.min}-{scale.max}")
        if row.turns and row.material_id not in materials:
            materials[row.material_id] = Transcript(session_id=row.material_id, suite="ratings", unit="session",
                                                    source_id=row.material_id, replicate=0, turns=row.turns,
                                                    stop_reason="max_turns", started_at=now, ended_at=now)
        elif row.run and row.material_id not in materials:
            stored = RunDir(Path(row.run)).transcripts().get(row.session_id or "")
            if stored is None:
                raise ConfigError(f"{path}:{number}: field 'session_id': {row.session_id} is not in {row.run}")
            materials[row.material_id] = stored
        rows.append(row)
    missing = sorted({r.material_id for r in rows} - set(materials))
    if missing:
        raise ConfigError(f"{path}: material '{missing[0]}' has no 'turns' and no 'run'/'session_id' in any of its rows")
    if not rows:
        raise ConfigError(f"{path}: no ratings")
    return rows, materials, rubrics


class _Typed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Agreement(_Typed):
    """Agreement statistics of one pairing (judge vs human mean, or humans among themselves)."""

    icc_a1: float | None = None
    icc_ak: float | None = None
    spearman: float | None = None
    mae: float | None = None
    qwk: float | None = None
    exact: float | None = None
    adjacent: float | None = None
    krippendorff_alpha: float | None = None


Interval = tuple[float, float] | None


class ScopeAgreement(_Typed):
    """One item or composite: how many rated units, the agreement, and bootstrap CIs over materials."""

    units: int
    raters: int
    note: str | None = None
    judge_human: Agreement | None = None
    judge_human_ci: dict[str, Interval] | None = None
    human_human: Agreement | None = None
    human_human_ci: dict[str, Interval] | None = None


class RubricAgreement(_Typed):
    items: dict[str, ScopeAgreement] = {}
    composites: dict[str, ScopeAgreement] = {}


class JudgeIdentity(_Typed):
    model: str
    identity: str
    server: str | None = None
    server_version: str | None = None


class JudgeScore(_Typed):
    material_id: str
    rubric: str
    item: str
    expected: float | None


class ValidationReport(_Typed):
    """validation.json: the judge, the ratings it was checked against, and the agreement per item and composite."""

    created_at: datetime
    judge: JudgeIdentity
    ratings_file: str
    ratings_sha256: str
    bootstrap: dict[str, Any]
    repeat_variability: dict[str, Any] | None = None
    materials: int
    raters: list[str]
    ratings: int
    invalid_judge_scores: int
    min_mass: float = 0.5
    judge_scores: list[JudgeScore]
    rubrics: dict[str, RubricAgreement]


def _scope_stats(judge: np.ndarray, humans: np.ndarray, levels: list[int] | None, rounds: int, seed: int) -> dict[str, Any]:
    """`judge`: units; `humans`: units x raters (NaN where missing)."""
    mean = np.nanmean(humans, axis=1)
    out: dict[str, Any] = {"units": int(len(judge)), "raters": int(humans.shape[1])}
    if len(judge) < 3:
        out["note"] = "fewer than 3 rated units: no agreement statistics"
        return out
    out["judge_human"] = judge_human(judge, mean, levels)
    out["judge_human_ci"] = bootstrap_ci(lambda i: judge_human(judge[i], mean[i], levels), len(judge), rounds, seed)
    out["human_human"] = human_human(humans, levels)
    if out["human_human"] is not None:
        out["human_human_ci"] = bootstrap_ci(lambda i: human_human(humans[i], levels) or {}, len(judge), rounds, seed)
    return out


async def _judge_scores(judge: Judge, rows: list[RatingRow], materials: dict[str, Transcript],
                        rubrics: dict[str, Rubric]) -> dict[tuple[str, str, str], float | None]:
    wanted = sorted({(r.material_id, r.rubric, r.item) for r in rows})
    by_material: dict[tuple[str, str], set[str]] = defaultdict(set)
    for m, rb, it in wanted:
        by_material[(m, rb)].add(it)
    scorers = {rb: RubricScorer(rubric) for rb, rubric in rubrics.items()}
    # Exactly the run's scoring path: the rubric scorer, the judge's budget and probability rule.
    results = await asyncio.gather(*(scorers[rb].score(materials[m], None, judge) for m, rb in by_material))
    scored = {(m, rb, row.item): row for (m, rb), rows_ in zip(by_material, results, strict=True) for row in rows_}
    return {key: (scored[key].expected if scored[key].valid else None) for key in wanted}


def validation_report(rows: list[RatingRow], materials: dict[str, Transcript], rubrics: dict[str, Rubric],
                      judge_scores: dict[tuple[str, str, str], float | None], *, rounds: int, seed: int) -> dict[str, Any]:
    raters = sorted({r.rater for r in rows})
    human: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        human[(r.material_id, r.rubric, r.item)][r.rater] = r.score
    report: dict[str, Any] = {"materials": len(materials), "raters": raters, "ratings": len(rows),
                              "invalid_judge_scores": sum(v is None for v in judge_scores.values()),
                              "judge_scores": [{"material_id": m, "rubric": rb, "item": it, "expected": v}
                                               for (m, rb, it), v in sorted(judge_scores.items())],
                              "rubrics": {}}
    for rubric in rubrics.values():
        section: dict[str, Any] = {"items": {}, "composites": {}}
        mats = sorted({m for (m, rb, _) in human if rb == rubric.id})
        for item in rubric.items:
            keys = [(m, rubric.id, item.id) for m in mats
                    if (m, rubric.id, item.id) in human and judge_scores.get((m, rubric.id, item.id)) is not None]
            if not keys:
                continue
            j = np.array([judge_scores[k] for k in keys])
            h = np.array([[human[k].get(rater, np.nan) for rater in raters] for k in keys])
            section["items"][item.id] = _scope_stats(j, h, rubric.scale_of(item).levels, rounds, seed)
        for comp in rubric.composites:
            judge_values, human_rows = [], []
            for m in mats:
                judged = rubric.composite_scores({i.id: judge_scores.get((m, rubric.id, i.id)) for i in rubric.items})[comp.id]
                per_rater = [rubric.composite_scores({i.id: human.get((m, rubric.id, i.id), {}).get(rater) for i in rubric.items})[comp.id]
                             for rater in raters]
                if judged is not None and any(v is not None for v in per_rater):
                    judge_values.append(judged)
                    human_rows.append([np.nan if v is None else v for v in per_rater])
            if judge_values:
                section["composites"][comp.id] = _scope_stats(np.array(judge_values), np.array(human_rows), None, rounds, seed)
        report["rubrics"][rubric.id] = section
    return report


def _repeat_variability(first: dict, repeats: list[dict]) -> dict[str, Any] | None:
    """How much the judge's expected score moves when the same unit is scored again."""
    if not repeats:
        return None
    sds = []
    for key, value in first.items():
        values = [value] + [r.get(key) for r in repeats]
        if all(v is not None for v in values):
            sds.append(float(np.std(values, ddof=1)))
    return {"repeats": len(repeats) + 1, "units": len(sds), "mean_sd": float(np.mean(sds)) if sds else None,
            "max_sd": float(np.max(sds)) if sds else None}


async def validate_judge(ratings: Path, judge_spec, *, out: Path, rounds: int = 1000, seed: int = 0,
                         repeats: int = 1, min_mass: float = 0.5) -> ValidationReport:
    """Score the rated material with the judge, compute agreement, and write `out/validation.json`."""
    from evalkit.backends.roles import judge_backend

    rows, materials, rubrics = load_ratings(ratings)
    ensure_directory(out, "out")
    async with judge_backend(judge_spec, out) as (backend, identity):
        judge = Judge(backend, JudgeSettings(min_mass=min_mass, adherence_threshold=None))
        scores = await _judge_scores(judge, rows, materials, rubrics)
        again = [await _judge_scores(judge, rows, materials, rubrics) for _ in range(repeats - 1)]
    report = ValidationReport.model_validate({
        "created_at": datetime.now(timezone.utc), "min_mass": min_mass,
        "judge": {"model": backend.info.model, "identity": identity, "server": backend.info.server,
                  "server_version": backend.info.server_version},
        "ratings_file": str(ratings), "ratings_sha256": hashlib.sha256(read_text(ratings).encode()).hexdigest(),
        "bootstrap": {"rounds": rounds, "seed": seed, "unit": "material"},
        "repeat_variability": _repeat_variability(scores, again),
        **validation_report(rows, materials, rubrics, scores, rounds=rounds, seed=seed)})
    write_atomic(out / "validation.json", report.model_dump_json(indent=2))
    return report
