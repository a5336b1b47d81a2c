"""`evalkit judge validate | train | eval-pref`: is the judge fit to rate, and can it be made fitter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from evalkit.cli.common import role_fields, run_async_command
from evalkit.core.console import console, out_console
from evalkit.core.errors import EvalkitError

judge_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Judges: validate against human ratings, fine-tune on them, and measure preference accuracy.")


# The judge's options, the same in every judge command.
JudgeModel = Annotated[Optional[str], typer.Option("--judge-model", help="Judge model path/id (managed vLLM).")]
JudgeEndpoint = Annotated[Optional[str], typer.Option("--judge-endpoint", help="Judge endpoint.")]
JudgeKeyEnv = Annotated[Optional[str], typer.Option("--judge-api-key-env", help="Environment variable holding the judge endpoint's API key.")]
JudgeBackend = Annotated[str, typer.Option("--judge-backend", help="How the judge is run (as run's --backend).")]
JudgeMinMass = Annotated[float, typer.Option("--judge-min-mass", help="As for run: the judge's minimum probability on the allowed answers.")]


def judge_role(model: str | None, endpoint: str | None, key_env: str | None, backend: str):
    from evalkit.backends.roles import RoleConfig

    return RoleConfig(**role_fields(model, [endpoint] if endpoint else None, key_env, backend))


@judge_app.command("validate")
def judge_validate(
    ratings: Annotated[Path, typer.Option(help="Human ratings JSONL: material_id, rubric, item, rater, score, and turns (or run + session_id).")],
    judge_model: JudgeModel = None,
    judge_endpoint: JudgeEndpoint = None,
    judge_api_key_env: JudgeKeyEnv = None,
    judge_backend: JudgeBackend = "auto",
    out: Annotated[Optional[Path], typer.Option(help="Folder for validation.json (default: results/judge-validation-<time>).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap rounds for the CIs (resampling materials), >= 0.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    repeats: Annotated[int, typer.Option(help="Score everything this many times (>= 1) and report how much scores move.")] = 1,
    judge_min_mass: JudgeMinMass = 0.5,
) -> None:
    """Score human-rated material with the judge; report ICC, weighted kappa, Spearman, Krippendorff's alpha,
    MAE and exact/adjacent agreement with bootstrap CIs, human-human beside judge-human."""
    from datetime import datetime

    from evalkit.cli.display import print_validation
    from evalkit.judging.validation import validate_judge

    spec = judge_role(judge_model, judge_endpoint, judge_api_key_env, judge_backend)
    if not spec.given:
        raise typer.BadParameter("give the judge", param_hint="--judge-model / --judge-endpoint")
    if bootstrap < 0 or repeats < 1:
        raise typer.BadParameter("expected --bootstrap >= 0 and --repeats >= 1", param_hint="--bootstrap / --repeats")
    out = out or Path("results") / f"judge-validation-{datetime.now():%Y%m%d-%H%M%S}"
    if not 0 <= judge_min_mass <= 1:
        raise typer.BadParameter("expected a probability between 0 and 1", param_hint="--judge-min-mass")
    report_ = run_async_command(validate_judge(ratings, spec, out=out, rounds=bootstrap, seed=seed, repeats=repeats,
                                               min_mass=judge_min_mass))
    print_validation(report_, out)


@judge_app.command("check")
def judge_check(
    judge_model: JudgeModel = None,
    judge_endpoint: JudgeEndpoint = None,
    judge_api_key_env: JudgeKeyEnv = None,
    judge_backend: JudgeBackend = "auto",
    suite: Annotated[Optional[list[str]], typer.Option(help="Only these instruments' vignettes: act-fm, tes, safety, persona-adherence, or a vignette YAML path; repeat (default: all four).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for judge-check.json (default: results/judge-check-<time>).")] = None,
    judge_min_mass: JudgeMinMass = 0.5,
) -> None:
    """Is the judge fit to rate? Rate the shipped calibration vignettes (clearly high and clearly low on named items)
    and report, per item and instrument, the share of high/low pairs ordered correctly, the mean gap, the invalid
    share and a verdict. Exit 0 fit, 1 unfit."""
    from datetime import datetime

    from evalkit.judging.fitness import check_judge

    spec = judge_role(judge_model, judge_endpoint, judge_api_key_env, judge_backend)
    if not spec.given:
        raise typer.BadParameter("give the judge", param_hint="--judge-model / --judge-endpoint")
    if not 0 <= judge_min_mass <= 1:
        raise typer.BadParameter("expected a probability between 0 and 1", param_hint="--judge-min-mass")
    out = out or Path("results") / f"judge-check-{datetime.now():%Y%m%d-%H%M%S}"
    report_ = run_async_command(check_judge(spec, out=out, sets=suite, min_mass=judge_min_mass))
    print_fitness(report_, out)
    raise typer.Exit(0 if report_.verdict == "fit" else 1)


def print_fitness(report, out: Path) -> None:
    def pct(value) -> str:
        return "—" if value is None else f"{value:.0%}"

    table = Table(title=f"judge {report.judge['model']}: fitness on evalkit's vignettes", title_justify="left")
    for column in ("instrument", "item", "pairs", "ordered right", "mean gap", "invalid"):
        table.add_column(column, overflow="fold")
    for rubric, inst in report.instruments.items():
        weak = [i for i in inst.items.values() if i.accuracy is None or i.accuracy < 1]
        for item in weak:
            table.add_row(rubric, item.item, str(item.pairs), pct(item.accuracy), pct(item.mean_gap), f"{item.invalid}/{item.readings}")
        table.add_row(f"[bold]{rubric}[/bold]", f"[bold]all {len(inst.items)} items: {inst.verdict}[/bold]", str(inst.pairs),
                      pct(inst.accuracy), pct(inst.mean_gap), f"{inst.invalid}/{inst.readings}", end_section=True)
    out_console.print(table)
    for rubric, inst in report.instruments.items():
        for reason in inst.reasons:
            console.print(f"{rubric}: unfit: {escape(reason)}", soft_wrap=True)
    verdict = "[bold green]fit[/bold green]" if report.verdict == "fit" else "[bold red]not fit[/bold red]"
    console.print(f"judge check: {verdict} · items ordered right in every pair are not listed · report: "
                  f"[bold]{escape(str(out / 'judge-check.json'))}[/bold] (record it in runs with --judge-check)", soft_wrap=True)


@judge_app.command("train")
def judge_train(
    ratings: Annotated[Path, typer.Option(help="Human ratings JSONL (as for judge validate).")],
    base: Annotated[str, typer.Option(help="Base model to fine-tune (local path).")],
    out: Annotated[Path, typer.Option(help="Folder for adapter/, merged/ and train.json (must be new or empty).")],
    full: Annotated[bool, typer.Option("--full", help="Train every weight instead of a LoRA adapter (small models).")] = False,
    epochs: Annotated[int, typer.Option(help="Training epochs (>= 1).")] = 3,
    learning_rate: Annotated[float, typer.Option(help="Learning rate (> 0).")] = 2e-4,
    validation_fraction: Annotated[float, typer.Option(help="Share of rated materials held out (split by material), in [0, 1).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for the split and training.")] = 0,
) -> None:
    """Fine-tune a judge on human ratings, in the exact prompt format it is scored with."""
    from evalkit.judging.training import train_judge

    if epochs < 1 or learning_rate <= 0 or not 0 <= validation_fraction < 1:
        raise typer.BadParameter("expected epochs >= 1, learning rate > 0, validation fraction in [0, 1)",
                                 param_hint="--epochs / --learning-rate / --validation-fraction")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvalkitError(f"--out {out}: not a new or empty folder; choose another")
    report_ = train_judge(ratings, base, out, full=full, epochs=epochs, learning_rate=learning_rate,
                          validation_fraction=validation_fraction, seed=seed)
    b, a = report_["validation_before"], report_["validation_after"]
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    out_console.print(f"trained {report_['method']} on {report_['examples']['train']} examples; validation loss {fmt(b['loss'])} → "
                      f"{fmt(a['loss'])}, accuracy {fmt(b['accuracy'])} → {fmt(a['accuracy'])}; judge: [bold]{escape(report_['judge'])}[/bold]",
                      soft_wrap=True)


@judge_app.command("eval-pref")
def judge_eval_pref(
    data: Annotated[Path, typer.Option(help="Preference pairs in PsychoCounsel-Preference format (parquet or JSONL).")],
    judge_model: JudgeModel = None,
    judge_endpoint: JudgeEndpoint = None,
    judge_api_key_env: JudgeKeyEnv = None,
    judge_backend: JudgeBackend = "auto",
    judge_min_mass: JudgeMinMass = 0.5,
    reward_model: Annotated[Optional[Path], typer.Option(help="A sequence-classification reward model, run in-process by transformers.")] = None,
    reward_endpoint: Annotated[Optional[str], typer.Option(help="A vLLM server running a reward model (its pooling API).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N pairs (>= 1).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for eval-pref.json (default: results/eval-pref-<time>).")] = None,
) -> None:
    """Accuracy of a judge or reward model on human preference pairs (ties count half)."""
    from datetime import datetime

    from evalkit.judging.preference import evaluate_preference

    spec = judge_role(judge_model, judge_endpoint, judge_api_key_env, judge_backend)
    given = [spec.given, reward_model is not None, reward_endpoint is not None]
    if sum(given) != 1:
        raise typer.BadParameter("give exactly one of an LLM judge, --reward-model or --reward-endpoint",
                                 param_hint="--judge-model / --judge-endpoint / --reward-model / --reward-endpoint")
    if limit is not None and limit < 1:
        raise typer.BadParameter("expected a positive number", param_hint="--limit")
    if not 0 <= judge_min_mass <= 1:
        raise typer.BadParameter("expected a probability between 0 and 1", param_hint="--judge-min-mass")
    out = out or Path("results") / f"eval-pref-{datetime.now():%Y%m%d-%H%M%S}"
    report_, path = run_async_command(evaluate_preference(data, out, judge=spec if spec.given else None, reward_model=reward_model,
                                                          reward_endpoint=reward_endpoint, limit=limit, min_mass=judge_min_mass))
    rate = "—" if report_["accuracy"] is None else f"{report_['accuracy']:.1%}"
    out_console.print(f"{escape(report_['judge'])} ({report_['kind']}): accuracy {rate} on {report_['pairs']} pairs "
                      f"({report_['correct']} right, {report_['wrong']} wrong, {report_['ties']} ties, {report_['invalid']} invalid); "
                      f"{escape(str(path))}", soft_wrap=True)
