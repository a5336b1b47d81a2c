"""Rubrics: validated instruments (items with anchored rating scales) and their composite scores.

One YAML file per instrument in `rubrics/`; the model below is the contract.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evalkit.core.errors import ConfigError
from evalkit.core.resources import rubrics_dir
from evalkit.core.yamlio import load_yaml_model

_ID = r"^[a-z0-9][a-z0-9_\-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scale(_Strict):
    min: int
    max: int
    labels: dict[int, str]

    @model_validator(mode="after")
    def _every_level_labelled(self) -> Scale:
        if self.max <= self.min:
            raise ValueError(f"max ({self.max}) must be above min ({self.min})")
        if self.max - self.min > 9 or self.min < 0:
            raise ValueError("levels must be single digits (0-9) so each is one score token")
        if set(self.labels) != set(self.levels):
            raise ValueError(f"labels must name exactly the levels {self.levels}")
        return self

    @property
    def levels(self) -> list[int]:
        return list(range(self.min, self.max + 1))


class Area(_Strict):
    id: str = Field(pattern=_ID)
    name: str


class Item(_Strict):
    id: str = Field(pattern=_ID)
    number: int | None = Field(None, ge=1, description="the item's number in the published instrument")
    name: str
    description: str = Field(min_length=10)
    anchors: dict[int, str]
    area: str | None = None
    direction: Literal["consistent", "inconsistent"] | None = None
    scale: Scale | None = Field(None, description="this item's own scale, when it differs from the rubric's (e.g. pass/fail)")
    critical: bool = Field(False, description="a pass/fail item whose failure is a critical failure of the session")
    applies_to_risk: list[str] = Field([], description="persona risk types this item is rated for (empty: every session)")
    applies_to_level: list[Literal["low", "moderate", "high"]] = Field(
        [], description="persona risk levels this item is rated for (empty: every level)")
    applies_if_safeguarding: bool = Field(
        False, description="rated only for personas with a safeguarding concern (another person at risk, a client under 18 "
                           "at risk, or an adult neglecting their own basic needs)")
    source: str | None = Field(None, description="the guidance this item follows, when it is not the instrument's own item")


class Composite(_Strict):
    id: str = Field(pattern=_ID)
    name: str
    method: Literal["sum", "mean"]
    parts: list[str] = Field(min_length=1)
    weights: dict[str, float] = {}
    better: Literal["higher", "lower"] = "higher"
    source: str | None = Field(None, description="citation, when the composite is not the instrument's own scoring")


class Rubric(_Strict):
    id: str = Field(pattern=_ID)
    name: str
    version: str
    source: str = Field(min_length=10)
    notes: str = ""
    unit: Literal["transcript", "response", "any"] = Field(description="what one rating is about; any: a scorer that reads either")
    scale: Scale
    judge_instructions: str
    areas: list[Area] = []
    items: list[Item] = Field(min_length=1)
    composites: list[Composite] = []

    @model_validator(mode="after")
    def _consistent(self) -> Rubric:
        item_ids = [item.id for item in self.items]
        if len(set(item_ids)) != len(item_ids):
            raise ValueError("item ids must be unique")
        numbers = [item.number for item in self.items if item.number is not None]
        if len(set(numbers)) != len(numbers):
            raise ValueError("published item numbers must be unique")
        area_ids = {area.id for area in self.areas}
        for item in self.items:
            levels = self.scale_of(item).levels
            if set(item.anchors) != set(levels):
                raise ValueError(f"item '{item.id}' needs one anchor for each level {levels}")
            if item.critical and levels != [0, 1]:
                raise ValueError(f"item '{item.id}' is critical, so it must be pass/fail (scale 0-1)")
            if item.area is not None and item.area not in area_ids:
                raise ValueError(f"item '{item.id}' names unknown area '{item.area}'")
        known = set(item_ids)
        for comp in self.composites:
            if comp.id in known:
                raise ValueError(f"composite '{comp.id}' reuses an existing id")
            for part in comp.parts:
                if part not in known:
                    raise ValueError(f"composite '{comp.id}' uses '{part}', which is not an item or an earlier composite")
            if not set(comp.weights) <= set(comp.parts):
                raise ValueError(f"composite '{comp.id}' weights parts it does not have")
            known.add(comp.id)
        return self

    def better(self, score_id: str) -> Literal["higher", "lower"]:
        """Which direction is better for an item (ACT-inconsistent items: lower) or composite."""
        for comp in self.composites:
            if comp.id == score_id:
                return comp.better
        return "lower" if self.item(score_id).direction == "inconsistent" else "higher"

    def scale_of(self, item: Item) -> Scale:
        return item.scale or self.scale

    @property
    def critical_items(self) -> list[Item]:
        return [item for item in self.items if item.critical]

    def item(self, item_id: str) -> Item:
        for item in self.items:
            if item.id == item_id:
                return item
        raise KeyError(item_id)

    def range_of(self, composite_id: str) -> tuple[float, float]:
        """The (min, max) an item or composite can take, derived from the scales and weights."""
        ranges: dict[str, tuple[float, float]] = {i.id: (self.scale_of(i).min, self.scale_of(i).max) for i in self.items}
        for comp in self.composites:
            lows = [ranges[p][0] * comp.weights.get(p, 1.0) for p in comp.parts]
            highs = [ranges[p][1] * comp.weights.get(p, 1.0) for p in comp.parts]
            if comp.method == "sum":
                ranges[comp.id] = (sum(lows), sum(highs))
            else:
                ranges[comp.id] = (sum(lows) / len(lows), sum(highs) / len(highs))
        return ranges[composite_id]

    def composite_scores(self, item_scores: dict[str, float | None]) -> dict[str, float | None]:
        """Composite scores from per-item scores; a composite with any missing part is None, never imputed."""
        values: dict[str, float | None] = dict(item_scores)
        out: dict[str, float | None] = {}
        for comp in self.composites:
            parts = [values.get(p) for p in comp.parts]
            if any(v is None for v in parts):
                result = None
            else:
                weighted = [v * comp.weights.get(p, 1.0) for p, v in zip(comp.parts, parts, strict=True)]  # type: ignore[operator]
                result = sum(weighted) if comp.method == "sum" else sum(weighted) / len(weighted)
            values[comp.id] = out[comp.id] = result
        return out

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


def load_rubric_file(path: Path) -> Rubric:
    rubric = load_yaml_model(path, Rubric)
    if rubric.id != path.stem:
        raise ConfigError(f"{path}: field 'id': '{rubric.id}' must equal the file name '{path.stem}'")
    return rubric


def available_rubrics() -> list[str]:
    return sorted(p.stem for p in rubrics_dir().glob("*.yaml"))


@cache
def load_rubric(name_or_path: str) -> Rubric:
    """A built-in rubric by id, or a rubric YAML by path."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        return load_rubric_file(path)
    if not re.fullmatch(_ID, name_or_path):
        raise ConfigError(f"unknown rubric '{name_or_path}'")
    candidate = rubrics_dir() / f"{name_or_path}.yaml"
    if not candidate.exists():
        raise ConfigError(f"unknown rubric '{name_or_path}' (available: {', '.join(available_rubrics())})")
    return load_rubric_file(candidate)
