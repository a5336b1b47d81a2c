"""Judge fitness vignettes: short calibration transcripts written by the project, each with the item levels it is
written to show (`vignettes/<rubric>.yaml`, one file per instrument: act-fm, tes, safety, persona-adherence).

A vignette is high or low on a few items by design; `evalkit judge check` asks a judge to rate exactly those items
and reports how often it orders each item's high/low pairs correctly. The texts are the project's own, written from
each instrument's published structure; every file cites its sources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evalkit.core.errors import ConfigError
from evalkit.core.resources import vignettes_dir
from evalkit.core.yamlio import load_yaml_model

_SLUG = r"^[a-z0-9][a-z0-9_\-\.]*$"
Level = Literal["high", "low"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VignetteTurn(_Strict):
    role: Literal["client", "therapist"]
    content: str = Field(min_length=1)


class Vignette(_Strict):
    id: str = Field(pattern=_SLUG)
    description: str = Field(min_length=1)
    persona: str | None = Field(None, description="a built-in persona the transcript is about (safety and adherence need one)")
    turns: list[VignetteTurn] = Field(min_length=2)
    turn: int | None = Field(None, ge=1, description="persona adherence: the index in `turns` of the client turn checked")
    levels: dict[str, Level] = Field(min_length=1, description="item or check -> the level the vignette is written to show")

    @model_validator(mode="after")
    def _alternates(self) -> Vignette:
        roles = [t.role for t in self.turns]
        if roles[0] != "client" or any(a == b for a, b in zip(roles, roles[1:], strict=False)):
            raise ValueError("turns must alternate, starting with the client")
        if self.turn is not None and (self.turn >= len(self.turns) or self.turns[self.turn].role != "client"):
            raise ValueError(f"turn {self.turn} is not a client turn of this vignette")
        return self


class VignetteSet(_Strict):
    rubric: str = Field(description="the rubric (or persona-adherence) the vignettes calibrate")
    version: str
    references: list[str] = Field(min_length=1)
    notes: str = ""
    vignettes: list[Vignette] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique(self) -> VignetteSet:
        ids = [v.id for v in self.vignettes]
        if len(set(ids)) != len(ids):
            raise ValueError("vignette ids must be unique")
        return self

    def pairs(self) -> dict[str, tuple[list[str], list[str]]]:
        """item -> (vignettes written high on it, vignettes written low on it)."""
        out: dict[str, tuple[list[str], list[str]]] = {}
        for vignette in self.vignettes:
            for item, level in vignette.levels.items():
                high, low = out.setdefault(item, ([], []))
                (high if level == "high" else low).append(vignette.id)
        return out


def available_vignette_sets() -> list[str]:
    return sorted(p.stem for p in vignettes_dir().glob("*.yaml"))


def load_vignette_set(name_or_path: str | Path) -> VignetteSet:
    """A shipped set by rubric id (act-fm, tes, safety, persona-adherence), or a vignette YAML by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = vignettes_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"vignettes '{name_or_path}': unknown (available: {', '.join(available_vignette_sets())})")
    return load_yaml_model(path, VignetteSet)
