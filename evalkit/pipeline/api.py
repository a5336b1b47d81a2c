"""The commands as Python, for notebooks and scripts: keyword forms of `evaluate` and `rescore`, and `compare` and
`gate` with their HTML reports. Every command that writes a report writes it here, after the analysis it shows.

A role is given as a `RoleConfig` (model, endpoint, api_key_env, backend, timeouts), a dict of the same fields, or a
ready backend object.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from evalkit.backends.base import Backend
from evalkit.core.errors import ConfigError
from evalkit.core.fileio import report_follows
from evalkit.core.progress import Reporter
from evalkit.core.yamlio import describe_validation_error
from evalkit.pipeline.evaluate import RunResult, evaluate
from evalkit.pipeline.rescore import rescore_async as _rescore_async
from evalkit.pipeline.spec import EvalSpec, RoleConfig

if TYPE_CHECKING:  # the statistics stack (scipy, statsmodels) loads only for compare and gate, not for every run
    from evalkit.analysis import compare as comparing
    from evalkit.analysis import gate as gating

_ROLE_KEYS = {"model", "endpoint", "api_key_env", "backend"}


def role_config(value: RoleConfig | dict | Backend, field: str) -> RoleConfig | Backend:
    """A role as the library takes it: a RoleConfig (a dict is validated into one) or a ready backend."""
    if isinstance(value, dict):
        try:
            return RoleConfig.model_validate(value)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(field, exc)) from None
    return value


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


def write_run_report(directory: Path) -> Path:
    from evalkit.report import build_report

    return build_report([directory])


async def compare_async(runs: list[str | Path], *, report: bool = True, pairwise_judge: RoleConfig | dict | None = None,
                        **kwargs: Any) -> tuple[comparing.Comparison, Path]:
    """Statistics across stored runs (see `analysis.compare`), then the comparison's HTML report beside them."""
    from evalkit.analysis import compare as comparing

    judge = role_config(pairwise_judge, "pairwise_judge") if pairwise_judge is not None else None
    out = Path(kwargs["out"]) if kwargs.get("out") else None  # else a new folder: no older report to pair with
    with report_follows(out / "report.html" if out else None, out / "comparison.json" if out else None):
        comparison, out_dir = await comparing.compare_async(runs, pairwise_judge=judge, **kwargs)
        if report:
            from evalkit.report import build_report

            build_report([Path(p) for p in comparison.runs.values()], out_dir / "report.html",
                         comparison=comparison.model_dump(mode="json"))
    return comparison, out_dir


def compare(runs: list[str | Path], **kwargs: Any) -> tuple[comparing.Comparison, Path]:
    """`compare_async` for plain scripts (not inside a running event loop)."""
    return asyncio.run(compare_async(runs, **kwargs))


def gate(baseline: str | Path, candidate: str | Path, *, report: bool = True, **kwargs: Any) -> tuple[gating.GateReport, Path]:
    """The non-inferiority gate (see `analysis.gate`): gate.json, gate-junit.xml, gate.md and gate-report.html."""
    from evalkit.analysis import gate as gating

    out = Path(kwargs.get("out") or candidate)
    with report_follows(out / "gate-report.html", out / "gate.json"):
        verdict, out_dir = gating.gate(baseline, candidate, **kwargs)
        if report:
            from evalkit.report import build_report

            build_report([Path(verdict.baseline), Path(verdict.candidate)], out_dir / "gate-report.html",
                         gate=verdict.model_dump(mode="json"))
    return verdict, out_dir


async def gate_async(baseline: str | Path, candidate: str | Path, **kwargs: Any) -> tuple[gating.GateReport, Path]:
    """`gate` inside a running event loop (a notebook): the work runs in a thread, so the loop stays free."""
    return await asyncio.to_thread(gate, baseline, candidate, **kwargs)
