"""`evalkit judge check`: is a judge fit to rate, shown on the project's calibration vignettes?

Validation against trained raters (`judge validate`) needs ratings most users do not have. Every instrument ships
vignettes written to be clearly high or clearly low on named items (content/vignettes.py). The judge rates each
vignette on those items with exactly the prompts, scorers and probability rule of a run; per item, every pair of a
high and a low vignette is ordered correctly when the high one gets the higher expected score (a tie counts half).

An instrument is *fit* when all of these hold (THRESHOLDS): at most 10% of readings invalid; at least 85% of all
high/low pairs ordered correctly; the mean high-minus-low gap is at least a fifth of the item's scale; and no item
is ordered correctly in fewer than half its pairs (a judge that reverses an item is not fit for it, however well it
does elsewhere). These are evalkit's thresholds for a plausibility check on written vignettes, not a validation:
passing says the judge can tell a clear case from its opposite on every item, nothing finer.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from evalkit.content.personas import Persona, load_personas
from evalkit.content.rubrics import load_rubric
from evalkit.content.vignettes import Vignette, VignetteSet, load_vignette_set
from evalkit.core.errors import ConfigError
from evalkit.core.fileio import ensure_directory, write_atomic
from evalkit.judging.adherence import ID as ADHERENCE
from evalkit.judging.adherence import TURN_CHECKS, AdherenceScorer
from evalkit.judging.judge import Judge, JudgeSettings
from evalkit.judging.scorer import RubricScorer
from evalkit.store.records import ItemScore, Transcript, Turn

DEFAULT_SETS = ("act-fm", "tes", "safety", ADHERENCE)


class _Typed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Thresholds(_Typed):
    max_invalid_share: float = 0.10
    min_accuracy: float = 0.85
    min_gap: float = Field(0.20, description="mean high-minus-low gap, as a share of the item's scale")
    min_item_accuracy: float = 0.50


THRESHOLDS = Thresholds()


class ItemFitness(_Typed):
    item: str
    pairs: int = Field(description="high/low pairs whose both readings were valid")
    correct: float = Field(description="pairs ordered correctly (ties count half)")
    accuracy: float | None
    mean_gap: float | None = Field(description="mean (high - low) expected score, as a share of the item's scale")
    readings: int
    invalid: int


class InstrumentFitness(_Typed):
    rubric: str
    vignettes_version: str
    vignettes: int
    items: dict[str, ItemFitness]
    pairs: int
    accuracy: float | None
    mean_gap: float | None
    readings: int
    invalid: int
    invalid_reasons: dict[str, int] = Field({}, description="the most frequent reasons readings were invalid, with counts")
    verdict: Literal["fit", "unfit"]
    reasons: list[str] = Field([], description="why unfit: each threshold missed, in words")


class FitnessReport(_Typed):
    created_at: datetime
    judge: dict[str, str | None]
    min_mass: float
    thresholds: Thresholds
    vignettes_sha256: str
    instruments: dict[str, InstrumentFitness]
    verdict: Literal["fit", "unfit"]


def _transcript(vset: VignetteSet, vignette: Vignette) -> Transcript:
    now = datetime.now(timezone.utc)
    turns = [Turn(role=t.role, content=t.content,
                  client_source=("persona" if i == 0 else "simulated") if t.role == "client" else None)
             for i, t in enumerate(vignette.turns)]
    return Transcript(session_id=f"{vset.rubric}:{vignette.id}", suite=f"judge-check-{vset.rubric}", unit="session",
                      source_id=vignette.persona or vignette.id, replicate=0, turns=turns, stop_reason="max_turns",
                      started_at=now, ended_at=now)


def _key(vset: VignetteSet, vignette: Vignette, item: str) -> str:
    """The score-row item a vignette level is about (adherence turn checks are per turn)."""
    if vset.rubric == ADHERENCE and item in TURN_CHECKS:
        if vignette.turn is None:
            raise ConfigError(f"vignette {vignette.id}: field 'turn': needed for the per-turn check '{item}'")
        return f"t{vignette.turn}.{item}"
    return item


async def _read(judge: Judge, vset: VignetteSet, vignette: Vignette, personas: dict[str, Persona]) -> dict[str, ItemScore]:
    """The judge's rows for the items this vignette is written to show, through the scorer a run would use."""
    persona = personas.get(vignette.persona) if vignette.persona else None
    if vignette.persona and persona is None:
        raise ConfigError(f"vignette {vignette.id}: field 'persona': '{vignette.persona}' is not a built-in persona")
    transcript = _transcript(vset, vignette)
    if vset.rubric == ADHERENCE:
        if persona is None:
            raise ConfigError(f"vignette {vignette.id}: field 'persona': adherence vignettes need one")
        scorer: AdherenceScorer | RubricScorer = AdherenceScorer()
    else:
        at_risk = persona is not None and persona.risk_level != "none"
        scorer = RubricScorer(load_rubric(vset.rubric), applies_to="risk" if at_risk else "all")
    keys = {_key(vset, vignette, item): item for item in vignette.levels}
    offered = set(scorer.keys(transcript, persona))
    if missing := sorted(set(keys) - offered):
        raise ConfigError(f"vignette {vignette.id}: field 'levels': '{keys[missing[0]]}' is not rated for this transcript "
                          f"and persona by the {vset.rubric} scorer")
    rows = await scorer.score(transcript, persona, judge, only=set(keys))
    return {keys[row.item]: row for row in rows if row.item in keys}


def _scale(vset: VignetteSet, item: str) -> float:
    if vset.rubric == ADHERENCE:
        return 1.0
    rubric = load_rubric(vset.rubric)
    scale = rubric.scale_of(rubric.item(item))
    return float(scale.max - scale.min)


def assess(vset: VignetteSet, readings: dict[str, dict[str, ItemScore]], thresholds: Thresholds = THRESHOLDS) -> InstrumentFitness:
    """One instrument's fitness from the readings (vignette id -> item -> row)."""
    items: dict[str, ItemFitness] = {}
    reasons: Counter[str] = Counter()
    gaps: list[float] = []
    for item, (high, low) in sorted(vset.pairs().items()):
        rows = [readings[v][item] for v in high + low]
        for row in rows:
            if not row.valid:
                reasons[(row.reason or "no reason given")[:120]] += 1
        value = {v: readings[v][item].expected for v in high + low if readings[v][item].valid}
        valid_pairs = [(value[h], value[lo]) for h in high for lo in low if h in value and lo in value]
        correct = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in valid_pairs)
        item_gaps = [(a - b) / _scale(vset, item) for a, b in valid_pairs]
        gaps += item_gaps
        items[item] = ItemFitness(item=item, pairs=len(valid_pairs), correct=correct,
                                  accuracy=correct / len(valid_pairs) if valid_pairs else None,
                                  mean_gap=sum(item_gaps) / len(item_gaps) if item_gaps else None,
                                  readings=len(rows), invalid=sum(not r.valid for r in rows))
    pairs = sum(i.pairs for i in items.values())
    accuracy = sum(i.correct for i in items.values()) / pairs if pairs else None
    mean_gap = sum(gaps) / len(gaps) if gaps else None
    n_readings, invalid = sum(i.readings for i in items.values()), sum(i.invalid for i in items.values())
    why = []
    if n_readings and invalid / n_readings > thresholds.max_invalid_share:
        why.append(f"{invalid} of {n_readings} readings ({invalid / n_readings:.0%}) were invalid "
                   f"(at most {thresholds.max_invalid_share:.0%} allowed)" + (f", mostly: {reasons.most_common(1)[0][0]}" if reasons else ""))
    if accuracy is None or accuracy < thresholds.min_accuracy:
        why.append(f"ordered {'no' if accuracy is None else f'{accuracy:.0%} of'} high/low pairs correctly "
                   f"(at least {thresholds.min_accuracy:.0%} needed)")
    if mean_gap is not None and mean_gap < thresholds.min_gap:
        why.append(f"the mean gap between high and low vignettes is {mean_gap:.0%} of the scale (at least {thresholds.min_gap:.0%} needed)")
    reversed_items = [i.item for i in items.values() if i.accuracy is not None and i.accuracy < thresholds.min_item_accuracy]
    if reversed_items:
        why.append(f"{len(reversed_items)} item(s) ordered correctly in fewer than half their pairs: {', '.join(reversed_items[:6])}")
    unread = [i.item for i in items.values() if i.pairs == 0]
    if unread:
        why.append(f"{len(unread)} item(s) with no valid high/low pair: {', '.join(unread[:6])}")
    return InstrumentFitness(rubric=vset.rubric, vignettes_version=vset.version, vignettes=len(vset.vignettes), items=items,
                             pairs=pairs, accuracy=accuracy, mean_gap=mean_gap, readings=n_readings, invalid=invalid,
                             invalid_reasons=dict(reasons.most_common(3)), verdict="unfit" if why else "fit", reasons=why)


async def check_sets(judge: Judge, sets: list[VignetteSet], thresholds: Thresholds = THRESHOLDS) -> dict[str, InstrumentFitness]:
    personas = {p.id: p for p in load_personas()}
    out = {}
    for vset in sets:
        read = await asyncio.gather(*(_read(judge, vset, v, personas) for v in vset.vignettes))
        out[vset.rubric] = assess(vset, {v.id: rows for v, rows in zip(vset.vignettes, read, strict=True)}, thresholds)
    return out


async def check_judge(judge_spec, *, out: Path, sets: list[str] | None = None, min_mass: float = 0.5,
                      concurrency: int = 32) -> FitnessReport:
    """Run a judge (a RoleConfig, or a ready backend) on the shipped vignettes and write `out/judge-check.json`."""
    from evalkit.backends.roles import judge_backend

    chosen = [load_vignette_set(name) for name in (sets or DEFAULT_SETS)]
    digest = hashlib.sha256("".join(s.model_dump_json() for s in chosen).encode()).hexdigest()
    ensure_directory(out, "out")
    async with judge_backend(judge_spec, out) as (backend, identity):
        judge = Judge(backend, JudgeSettings(min_mass=min_mass, adherence_threshold=None), concurrency=concurrency)
        instruments = await check_sets(judge, chosen)
    report = FitnessReport(created_at=datetime.now(timezone.utc), min_mass=min_mass, thresholds=THRESHOLDS,
                           judge={"model": backend.info.model, "identity": identity, "server": backend.info.server,
                                  "server_version": backend.info.server_version},
                           vignettes_sha256=digest, instruments=instruments,
                           verdict="fit" if all(i.verdict == "fit" for i in instruments.values()) else "unfit")
    write_atomic(out / "judge-check.json", report.model_dump_json(indent=2))
    return report
