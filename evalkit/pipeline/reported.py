"""`compare` and `gate` with their HTML reports, and a run's report: what the commands that read stored runs write.

Apart from `pipeline.api` so that `evalkit compare` and `evalkit gate` do not load the run pipeline (backends, the
session engine, scorers) they never use; `pipeline.api` exports these with the rest of the Python API.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.core.fileio import report_follows
from evalkit.pipeline.spec import RoleConfig, role_config

if TYPE_CHECKING:  # the statistics stack (scipy, statsmodels) loads only when compare or gate runs
    from evalkit.analysis import compare as comparing
    from evalkit.analysis import gate as gating


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
