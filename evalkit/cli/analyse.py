"""`evalkit compare`, `gate`, `plan` and `report`: commands that read stored runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from evalkit.cli.common import IncludeFlagged
from evalkit.core.console import console
from evalkit.core.errors import EvalkitError


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories, one per condition.")],
    baseline: Annotated[Optional[Path], typer.Option(help="Baseline run (e.g. GPT-4o): win rates of every run against it.")] = None,
    metric: Annotated[Optional[list[str]], typer.Option(help="Metric(s) to analyse, e.g. act-fm.consistency_total (default: all).")] = None,
    matched: Annotated[bool, typer.Option("--matched", help="Analyse only the sessions every run shares.")] = False,
    include_flagged: IncludeFlagged = None,
    out: Annotated[Optional[Path], typer.Option(help="Where comparison.json and tables go (default: beside the runs).")] = None,
    pairwise_judge_model: Annotated[Optional[str], typer.Option(help="Judge for pairwise preference against the baseline (model path/id).")] = None,
    pairwise_judge_endpoint: Annotated[Optional[str], typer.Option(help="Endpoint of the pairwise judge.")] = None,
    pairwise_judge_api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the pairwise judge's API key.")] = None,
    pairwise_reward_endpoint: Annotated[Optional[str], typer.Option(help="A vLLM server running a reward model (pooling API) as the pairwise judge.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Rounds of the reference suites' paired bootstrap (0: the default 1000).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed for the bootstrap and the rating permutation test.")] = 0,
    primary: Annotated[Optional[list[str]], typer.Option(help="Primary metric(s), the family whose familywise error is controlled (default: the suite's).")] = None,
    alpha: Annotated[float, typer.Option(help="Familywise significance level, in (0, 0.5).")] = 0.05,
    all_tables: Annotated[bool, typer.Option("--all", help="Print the full tables (every test of every metric), not the summary.")] = False,
) -> None:
    """Statistics across stored runs, persona as the unit: mixed model (F test), contrasts, Friedman, win rates, Bradley-Terry;
    familywise error controlled over the suite's primary metrics."""
    import gc

    from evalkit.backends.roles import RoleConfig
    from evalkit.cli.display import print_comparison
    from evalkit.pipeline.reported import compare as run_compare

    # The modules loaded so far live as long as the process: keep them out of every garbage collection.
    gc.freeze()

    if bootstrap < 0:
        raise typer.BadParameter("expected 0 or more rounds", param_hint="--bootstrap")
    judge = None
    if pairwise_judge_model or pairwise_judge_endpoint:
        judge = RoleConfig(model=pairwise_judge_model, endpoint=pairwise_judge_endpoint or [], api_key_env=pairwise_judge_api_key_env)
    comparison, out_dir = run_compare(runs, baseline=baseline, metrics=metric, matched=matched, include_flagged=include_flagged,
                                      out=out, pairwise_judge=judge, pairwise_reward_endpoint=pairwise_reward_endpoint,
                                      bootstrap_rounds=bootstrap, seed=seed, primary=primary, alpha=alpha)
    print_comparison(comparison, out_dir, full=all_tables)


def gate_command(
    baseline: Annotated[Path, typer.Option(help="The released model's stored run.")],
    candidate: Annotated[Path, typer.Option(help="The new checkpoint's stored run.")],
    metric: Annotated[Optional[list[str]], typer.Option(help="Metric(s) to gate (default: the suite's).")] = None,
    margin: Annotated[Optional[float], typer.Option(help="Non-inferiority margin for every gated metric (default: the suite's).")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="One-sided significance level, in (0, 0.5) (default: the suite's, 0.05).")] = None,
    power: Annotated[Optional[float], typer.Option(help="Power a regression verdict needs, in (0, 1) (default: the suite's, 0.8).")] = None,
    max_invalid_rate: Annotated[Optional[float], typer.Option(help="Most sessions of a gated metric that may be invalid, per metric (default 0.05).")] = None,
    min_shared: Annotated[float, typer.Option(help="Share of the baseline's sessions the candidate must also have (default 1: all).")] = 1.0,
    include_flagged: IncludeFlagged = None,
    out: Annotated[Optional[Path], typer.Option(help="Where gate.json, gate-junit.xml and gate.md go (default: the candidate run).")] = None,
    require_validated_judge: Annotated[bool, typer.Option("--require-validated-judge", help="Cannot decide unless both runs recorded a judge validation report.")] = False,
    skip_critical: Annotated[Optional[list[str]], typer.Option("--skip-critical", help="A rubric whose new critical failures the gate should not check (e.g. safety); every other rubric with critical items is checked.")] = None,
) -> None:
    """Non-inferiority gate for CI: exit 0 pass, 1 regression, 2 cannot decide (files are written in every case)."""
    from evalkit.analysis.gate import EXIT
    from evalkit.cli.display import print_gate
    from evalkit.pipeline.reported import gate

    report, out_dir = gate(baseline, candidate, metrics=metric, margin=margin, alpha=alpha, power=power,
                           max_invalid_rate=max_invalid_rate, min_shared=min_shared, include_flagged=include_flagged,
                           out=out, require_validated_judge=require_validated_judge, skip_critical=skip_critical)
    if report.verdict == "undecided":  # the files are written; the terminal gets one line
        raise EvalkitError(f"cannot decide: {report.reason} (details: {out_dir / 'gate.md'})")
    print_gate(report, out_dir)
    raise typer.Exit(EXIT[report.verdict])


def plan(
    metric: Annotated[str, typer.Option(help="Metric, e.g. tes.total.")],
    margin: Annotated[Optional[float], typer.Option(help="Non-inferiority margin, in the metric's units (> 0; default with --run: the suite's).")] = None,
    run: Annotated[Optional[list[Path]], typer.Option(help="Two stored runs of the same suite and of two different models: their matched differences set the variance components.")] = None,
    sd_between: Annotated[Optional[float], typer.Option(help="SD across personas of a persona's true drop (> 0).")] = None,
    sd_within: Annotated[Optional[float], typer.Option(help="SD of one session's drop around its persona's (with --sd-between).")] = None,
    sd: Annotated[Optional[float], typer.Option(help="Total SD of one session's paired difference; counted as between-persona (conservative).")] = None,
    replicates: Annotated[Optional[int], typer.Option(help="Sessions per persona the gate will run (default: the runs', or 1).")] = None,
    detect: Annotated[Optional[float], typer.Option(help="The true drop the gate should catch (default: one margin).")] = None,
    power: Annotated[float, typer.Option(help="Probability wanted, in (0, 1).")] = 0.8,
    alpha: Annotated[float, typer.Option(help="One-sided significance level, in (0, 0.5).")] = 0.05,
    include_flagged: IncludeFlagged = None,
) -> None:
    """Personas x replicates a gate needs: to pass an equal candidate, and to detect a given drop, each with the stated power."""
    from evalkit.analysis.plan import plan_gate
    from evalkit.cli.display import print_plan

    print_plan(plan_gate(metric, margin, runs=run, sd=sd, sd_between=sd_between, sd_within=sd_within, replicates=replicates,
                         detect=detect, power=power, alpha=alpha, include_flagged=include_flagged))


def report(
    runs: Annotated[list[Path], typer.Argument(help="One or more run directories.")],
    out: Annotated[Optional[Path], typer.Option(help="HTML file to write (default: RUN/report.html, or beside the runs).")] = None,
    comparison: Annotated[Optional[Path], typer.Option(help="A comparison.json to include (from evalkit compare).")] = None,
) -> None:
    """Write a self-contained HTML report (opens offline) for stored runs."""
    from evalkit.report import build_report, read_comparison

    path = build_report(runs, out, comparison=read_comparison(comparison) if comparison else None)
    console.print(f"report: [bold]{escape(str(path))}[/bold]", soft_wrap=True)
