"""Persona-library coverage: what the library declares it covers (`simulators/coverage.yaml`) against what it holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ._resources import simulators_dir
from ._yaml import load_yaml_model
from .personas import Persona


class CoverageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    minimum_personas: int
    minimum_presenting_problems: int
    minimum_with_risk: int
    cells: dict[str, dict[str, int]]


def load_coverage_spec(path: Path | None = None) -> CoverageSpec:
    return load_yaml_model(path or simulators_dir() / "coverage.yaml", CoverageSpec)


def coverage_counts(personas: list[Persona], spec: CoverageSpec) -> dict[str, Counter]:
    return {dimension: Counter(getattr(p, dimension) for p in personas) for dimension in spec.cells}


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
    return short
