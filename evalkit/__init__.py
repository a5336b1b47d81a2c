"""evalkit: clinical-fidelity evaluation of counselling language models.

Personas -> sessions -> transcripts -> judge -> scores -> summary -> statistics -> report / gate. The CLI is
a thin skin over these functions. `import evalkit` is light: the public names below are loaded on first
use, so neither statsmodels, torch nor vLLM is imported until a stage needs it.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .errors import EvalkitError

try:
    __version__ = version("evalkit-clinical")
except PackageNotFoundError:
    try:
        __version__ = version("evalkit")
    except PackageNotFoundError:  # running from a source tree that is not installed
        __version__ = "0.0.0+source"

_LAZY = {
    "EvalSpec": "evalkit.spec", "RoleSpec": "evalkit.roles", "RunResult": "evalkit.runner",
    "run": "evalkit.runner", "run_async": "evalkit.runner", "rescore": "evalkit.runner", "rescore_async": "evalkit.runner",
    "compare": "evalkit.compare", "compare_async": "evalkit.compare", "gate": "evalkit.gate", "gate_async": "evalkit.gate",
    "evaluate": "evalkit.runner", "evaluate_many": "evalkit.runner",
    "load_runs": "evalkit.results", "RunDir": "evalkit.rundir",
    "load_rubric": "evalkit.rubrics", "load_suite": "evalkit.suites", "available_suites": "evalkit.suites",
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
    from .backends.base import register_backend
    from .backends.mock import MockBackend
    from .compare import compare, compare_async
    from .gate import gate, gate_async
    from .judging.scorer import register_scorer
    from .results import load_runs
    from .roles import RoleSpec
    from .rubrics import load_rubric
    from .rundir import RunDir
    from .runner import RunResult, evaluate, evaluate_many, rescore, rescore_async, run, run_async
    from .spec import EvalSpec
    from .suites import available_suites, load_suite
