"""The commands as Python, for notebooks and scripts: keyword forms of `evaluate` and `rescore`, and `compare` and
`gate` with their HTML reports. Every command that writes a report writes it here, after the analysis it shows.

A role is given as a `RoleConfig` (model, endpoint, api_key_env, backend, timeouts), a dict of the same fields, or a
ready backend object.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evalkit.backends.base import Backend
from evalkit.core.errors import ConfigError
from evalkit.core.progress import Reporter
from evalkit.core.yamlio import describe_validation_error
from evalkit.pipeline.evaluate import RunResult, evaluate
from evalkit.pipeline.reported import compare, compare_async, gate, gate_async, write_run_report
from evalkit.pipeline.rescore import rescore_async as _rescore_async
from evalkit.pipeline.spec import EvalSpec, RoleConfig, role_config

__all__ = ["compare", "compare_async", "gate", "gate_async", "rescore", "rescore_async", "role_config", "run", "run_async",
           "spec_from_kwargs", "write_run_report"]

_ROLE_KEYS = {"model", "endpoint", "api_key_env", "backend"}


def spec_from_kwargs(model: Any = None, suite: str = "act-fm", **kwargs: Any) -> tuple[EvalSpec, dict[str, Backend]]:
    """`run(model, suite, endpoint=..., client=RoleConfig|dict|Backend, judge=..., sessions=...)` as an EvalSpec."""
    instances: dict[str, Backend] = {}
    fields: dict[str, Any] = {"suite": suite}
    therapist = {k: kwargs.pop(k) for k in list(kwargs) if k in _ROLE_KEYS and kwargs[k] is not None}
    if isinstance(model, str) or model is None:
        fields["therapist"] = {"model": model, **therapist}
    elif isinstance(model, RoleConfig):
        fields["therapist"] = model.model_dump(exclude_unset=True) | therapist
    else:
        instances["therapist"] = model
        fields["therapist"] = {"model": model.info.model, "backend": model.info.kind}
    for name in ("client", "judge"):
        value = kwargs.pop(name, None)
        if value is None:
            continue
        value = role_config(value, name)
        if isinstance(value, RoleConfig):
            fields[name] = value.model_dump(exclude_unset=True)
        else:
            instances[name] = value
    settings = kwargs.pop("judge_settings", None)
    if settings is not None:
        fields.update(judge_min_mass=settings.min_mass, judge_mass_check=settings.check_mass,
                      adherence=settings.adherence_threshold is not None,
                      adherence_threshold=settings.adherence_threshold if settings.adherence_threshold is not None else 0.8)
    kwargs.pop("show_progress", None)
    fields.update(kwargs)
    try:
        return EvalSpec.model_validate(fields), instances
    except ValidationError as exc:
        raise ConfigError(describe_validation_error("run", exc)) from None


async def run_async(model: Any = None, suite: str = "act-fm", *, reporter: Reporter | None = None, **kwargs: Any) -> RunResult:
    """Keyword form of `evaluate`, then the run's report: `model` is a path/name, a RoleConfig or a backend object."""
    command = kwargs.pop("command", None)
    spec, instances = spec_from_kwargs(model, suite, **kwargs)
    result = await evaluate(spec, backends=instances, reporter=reporter, command=command)
    if spec.report:
        write_run_report(result.directory)
    return result


def run(model: Any = None, suite: str = "act-fm", **kwargs: Any) -> RunResult:
    """`run_async` for plain scripts (not inside a running event loop)."""
    return asyncio.run(run_async(model, suite, **kwargs))


async def rescore_async(source: str | Path, *, judge: RoleConfig | dict | Backend, report: bool = True, **kwargs: Any) -> RunResult:
    """Re-judge a stored run into a new run (see `pipeline.rescore`), then write its report."""
    result = await _rescore_async(source, judge=role_config(judge, "judge"), **kwargs)
    if report:
        write_run_report(result.directory)
    return result


def rescore(*args: Any, **kwargs: Any) -> RunResult:
    """`rescore_async` for plain scripts (not inside a running event loop)."""
    return asyncio.run(rescore_async(*args, **kwargs))
