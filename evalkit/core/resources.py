"""Where the shipped data (rubrics, simulators, suites, vignettes) lives.

In a wheel it is `evalkit/_data/`; in a source checkout or editable install it is
the repository's top-level `rubrics/`, `simulators/`, `suites/` and `vignettes/`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # evalkit/


@cache
def data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"evalkit's {name}/ data is missing from this installation")


def rubrics_dir() -> Path:
    return data_dir("rubrics")


def simulators_dir() -> Path:
    return data_dir("simulators")


def suites_dir() -> Path:
    return data_dir("suites")


def vignettes_dir() -> Path:
    return data_dir("vignettes")


def lm_eval_tasks_dir() -> Path:
    return _PACKAGE / "lm_eval_tasks"
