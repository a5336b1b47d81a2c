"""Persona-library coverage: what the library declares it covers (`simulators/coverage.yaml`) against what it
holds, and whether every suite's sessions are long enough for the personas it uses to make every disclosure
(risk disclosures within the first half)."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from evalkit.content.personas import Persona
from evalkit.core.resources import simulators_dir
from evalkit.core.yamlio import load_yaml_model


class Crossed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dimensions: list[str] = Field(min_length=2, max_length=2)
    minimum: int = Field(ge=0)


class CoverageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    minimum_personas: int
    minimum_presenting_problems: int
    minimum_with_risk: int
    cells: dict[str, dict[str, int]]
    crossed: list[Crossed] = []


def load_coverage_spec(path: Path | None = None) -> CoverageSpec:
    return load_yaml_model(path or simulators_dir() / "coverage.yaml", CoverageSpec)


def coverage_counts(personas: list[Persona], spec: CoverageSpec) -> dict[str, Counter]:
    return {dimension: Counter(getattr(p, dimension) for p in personas) for dimension in spec.cells}


def crossed_counts(personas: list[Persona], spec: CoverageSpec, crossed: Crossed) -> dict[tuple[str, str], int]:
    a, b = crossed.dimensions
    counts = Counter((getattr(p, a), getattr(p, b)) for p in personas)
    return {pair: counts[pair] for pair in itertools.product(spec.cells.get(a, {}), spec.cells.get(b, {}))}


def shortfalls(personas: list[Persona], spec: CoverageSpec) -> list[str]:
    """Every declared cell or total that is below its minimum, in words."""
    short = []
    if len(personas) < spec.minimum_personas:
        short.append(f"{len(personas)} personas (need {spec.minimum_personas})")
    problems = len({p.presenting_problem for p in personas})
    if problems < spec.minimum_presenting_problems:
        short.append(f"{problems} presenting problems (need {spec.minimum_presenting_problems})")
    with_risk = sum(p.risk_level != "none" for p in personas)
    if with_risk < spec.minimum_with_risk:
        short.append(f"{with_risk} personas with risk (need {spec.minimum_with_risk})")
    counts = coverage_counts(personas, spec)
    for dimension, cells in spec.cells.items():
        for value, minimum in cells.items():
            if counts[dimension][value] < minimum:
                short.append(f"{dimension}={value}: {counts[dimension][value]} (need {minimum})")
    for crossed in spec.crossed:
        for (a, b), have in crossed_counts(personas, spec, crossed).items():
            if have < crossed.minimum:
                short.append(f"{crossed.dimensions[0]}={a} x {crossed.dimensions[1]}={b}: {have} (need {crossed.minimum})")
    return short


def suite_schedule_problems(suite_ids: list[str] | None = None) -> dict[str, list[str]]:
    """Built-in suite -> personas whose disclosures its turn count cannot reach (empty lists when all is well)."""
    from evalkit.content.suites import available_suites, load_suite, schedule_problems

    out = {}
    for suite_id in suite_ids or available_suites():
        loaded = load_suite(suite_id)
        if loaded.suite.unit == "session":
            out[suite_id] = schedule_problems(loaded.personas, loaded.suite.turns)
    return out
