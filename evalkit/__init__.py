"""evalkit: clinical-fidelity evaluation of counselling language models.

Personas -> sessions -> transcripts -> judge -> scores -> summary -> statistics -> report / gate. The CLI is
a thin skin over these functions. `import evalkit` is light: the public names below are loaded on first
use, so neither statsmodels, torch nor vLLM is imported until a stage needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from evalkit.core.errors import EvalkitError
from evalkit.core.version import __version__

_LAZY = {
    "EvalSpec": "evalkit.pipeline.spec", "RoleConfig": "evalkit.backends.roles", "RunResult": "evalkit.pipeline.evaluate",
    "evaluate": "evalkit.pipeline.evaluate", "evaluate_many": "evalkit.pipeline.evaluate",
    "run": "evalkit.pipeline.api", "run_async": "evalkit.pipeline.api", "rescore": "evalkit.pipeline.api",
    "rescore_async": "evalkit.pipeline.api", "compare": "evalkit.pipeline.api", "compare_async": "evalkit.pipeline.api",
    "gate": "evalkit.pipeline.api", "gate_async": "evalkit.pipeline.api",
    "load_runs": "evalkit.analysis.tables", "RunDir": "evalkit.store.rundir",
    "load_rubric": "evalkit.content.rubrics", "load_suite": "evalkit.content.suites", "available_suites": "evalkit.content.suites",
    "register_backend": "evalkit.backends.base", "register_scorer": "evalkit.judging.scorer",
    "MockBackend": "evalkit.backends.mock",
}
__all__ = ["EvalkitError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    # ruff: noqa: F401 - names for type checkers; at run time they are loaded by __getattr__
    from evalkit.analysis.tables import load_runs
    from evalkit.backends.base import register_backend
    from evalkit.backends.mock import MockBackend
    from evalkit.backends.roles import RoleConfig
    from evalkit.content.rubrics import load_rubric
    from evalkit.content.suites import available_suites, load_suite
    from evalkit.judging.scorer import register_scorer
    from evalkit.pipeline.api import compare, compare_async, gate, gate_async, rescore, rescore_async, run, run_async
    from evalkit.pipeline.evaluate import RunResult, evaluate, evaluate_many
    from evalkit.pipeline.spec import EvalSpec
    from evalkit.store.rundir import RunDir
