"""`evalkit run`, `rescore`, `demo` and `track`: commands that write runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from evalkit.cli.common import (
    build_spec,
    given,
    kinds_help,
    parse_pairs,
    parse_timeouts,
    parse_vllm_args,
    role_fields,
    rubrics_of,
    run_async_command,
    track_runs,
)
from evalkit.core.console import console, warn


def run_command(
    ctx: typer.Context,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Model under test: a local path or hub id (managed vLLM), or the served name at --endpoint. Repeat to evaluate several checkpoints, each into its own run.")] = None,
    suite: Annotated[str, typer.Option("--suite", "-s", help="Built-in suite id or a suite YAML path.")] = "act-fm",
    config: Annotated[Optional[Path], typer.Option(help="A run configuration YAML with any of these settings; flags given here override it.")] = None,
    endpoint: Annotated[Optional[list[str]], typer.Option(help="OpenAI-compatible endpoint serving the model under test; repeat for replicas.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the endpoint's API key.")] = None,
    backend: Annotated[str, typer.Option(help=f"How the model under test is run: {kinds_help()}.")] = "auto",
    lora: Annotated[Optional[list[str]], typer.Option(help="NAME=PATH of a LoRA adapter of --model; repeat: every adapter is evaluated as its own run, all on one managed vLLM server.")] = None,
    client_model: Annotated[Optional[str], typer.Option(help="Simulated client's model (default: the model under test, recorded as self-play).")] = None,
    client_endpoint: Annotated[Optional[list[str]], typer.Option(help="Simulated client's endpoint; repeat for replicas.")] = None,
    client_api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the client endpoint's API key.")] = None,
    client_backend: Annotated[str, typer.Option(help="How the simulated client is run (as --backend).")] = "auto",
    judge_model: Annotated[Optional[str], typer.Option(help="Judge's model (default: the model under test, recorded as self-judged).")] = None,
    judge_endpoint: Annotated[Optional[list[str]], typer.Option(help="Judge's endpoint; repeat for replicas.")] = None,
    judge_api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the judge endpoint's API key.")] = None,
    judge_backend: Annotated[str, typer.Option(help="How the judge is run (as --backend).")] = "auto",
    sessions: Annotated[Optional[int], typer.Option(help="Sessions to run, cycling through personas/utterances (default: one each).")] = None,
    turns: Annotated[Optional[int], typer.Option(help="Therapist turns per session (default: the suite's).")] = None,
    concurrency: Annotated[int, typer.Option(help="Sessions in flight at once.")] = 16,
    judge_concurrency: Annotated[int, typer.Option(help="Judge requests in flight at once, over every scorer.")] = 64,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default: results/<suite>-<model>-<configuration hash>, so the same command resumes).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Require an existing run in --out and continue it.")] = False,
    rejudge_invalid: Annotated[bool, typer.Option("--rejudge-invalid", help="Ask the judge again for every invalid score row.")] = False,
    max_tokens: Annotated[Optional[int], typer.Option(help="Max tokens per therapist and client turn.")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="Therapist sampling temperature.")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Therapist nucleus sampling.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Sampling seed, sent to backends that honour it and recorded in the manifest.")] = None,
    timeout: Annotated[Optional[list[str]], typer.Option(help="[ROLE:]KIND=SECONDS with KIND connect, first-byte, total or deadline (default 10, 120, 150, 180); repeat. The deadline bounds a request with all its retries, and caps the others: deadline=20 gives up within 20 s.")] = None,
    max_model_len: Annotated[Optional[int], typer.Option(help="Context length for managed vLLM servers.")] = None,
    vllm_args: Annotated[str, typer.Option(help="Extra arguments for managed vLLM servers, e.g. \"--dtype float32\".")] = "",
    reasoning_parser: Annotated[Optional[str], typer.Option(help="Start managed vLLM servers with this --reasoning-parser (reasoning models).")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Let transformers/vLLM run the checkpoint's own code.")] = False,
    judge_min_mass: Annotated[float, typer.Option(help="The judge must put this much of its own probability on the allowed answers, or the score is invalid.")] = 0.5,
    no_mass_check: Annotated[bool, typer.Option("--no-mass-check", help="No effect (kept for old command lines): every judge reading measures that probability in its one request; --judge-min-mass 0 accepts any.")] = False,
    adherence_threshold: Annotated[float, typer.Option(help="Flag sessions whose simulated client passes fewer of its persona checks.")] = 0.8,
    no_adherence: Annotated[bool, typer.Option("--no-adherence", help="Do not check simulated client turns against their persona.")] = False,
    include_flagged: Annotated[Optional[bool], typer.Option("--include-flagged/--exclude-flagged", help="Keep (or leave out) sessions whose simulated client failed a persona check, in this run's statistics and in every later command that reads it (default: as the run being continued recorded, else left out).")] = None,
    replay_client: Annotated[Optional[Path], typer.Option(help="Re-use a stored run's client turns while the therapist's replies match it (low-noise gates).")] = None,
    scripted_client: Annotated[Optional[Path], typer.Option(help="Take every client turn from a scripts YAML (deterministic checks).")] = None,
    judge_validation: Annotated[Optional[Path], typer.Option(help="The judge's validation.json (evalkit judge validate), recorded in the manifest.")] = None,
    judge_check: Annotated[Optional[Path], typer.Option(help="The judge's judge-check.json (evalkit judge check on the shipped vignettes), recorded in the manifest.")] = None,
    emotion_model: Annotated[Optional[Path], typer.Option(help="Reference suites: a sequence-classification model (transformers) for emotion accuracy.")] = None,
    emotion_label: Annotated[Optional[list[str]], typer.Option(help="MODEL_LABEL=DATASET_LABEL mapping of the emotion classifier's labels; repeat.")] = None,
    reward_endpoint: Annotated[Optional[str], typer.Option(help="vLLM server of a reward model, for suites that score with it ({rubric: reward, scorer: reward}).")] = None,
    compare_runs: Annotated[bool, typer.Option("--compare", help="With several checkpoints: compare their runs afterwards.")] = False,
    mlflow: Annotated[Optional[str], typer.Option(help="Log the run to MLflow at this tracking URI (e.g. file:./mlruns).")] = None,
    wandb: Annotated[Optional[str], typer.Option(help="Log the run to this Weights & Biases project (WANDB_MODE=offline works offline).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or tables.")] = False,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the run's effective configuration as a --config file and exit without running.")] = False,
) -> None:
    """Simulate sessions against a model, score them, and write a run directory."""
    from evalkit.pipeline.spec import EvalSpec

    models = model or [None]
    fields: dict[str, Any] = {
        "suite": suite, "client": role_fields(client_model, client_endpoint, client_api_key_env, client_backend),
        "judge": role_fields(judge_model, judge_endpoint, judge_api_key_env, judge_backend), "lora": parse_pairs(lora or [], "--lora"),
        "sessions": sessions, "turns": turns, "concurrency": concurrency, "judge_concurrency": judge_concurrency, "out": out,
        "resume": resume, "rejudge_invalid": rejudge_invalid, "max_tokens": max_tokens, "temperature": temperature,
        "top_p": top_p, "seed": seed, "max_model_len": max_model_len, "vllm_args": parse_vllm_args(vllm_args),
        "reasoning_parser": reasoning_parser, "trust_remote_code": trust_remote_code, "judge_min_mass": judge_min_mass,
        "judge_mass_check": not no_mass_check, "adherence": not no_adherence, "adherence_threshold": adherence_threshold,
        "include_flagged": include_flagged, "replay_client": replay_client, "scripted_client": scripted_client,
        "judge_validation": judge_validation, "judge_check": judge_check, "emotion_model": emotion_model,
        "emotion_labels": parse_pairs(emotion_label or [], "--emotion-label"), "reward_endpoint": reward_endpoint}
    params = {"client": ("client_model", "client_endpoint", "client_api_key_env", "client_backend"),
              "judge": ("judge_model", "judge_endpoint", "judge_api_key_env", "judge_backend"),
              "lora": ("lora",), "vllm_args": ("vllm_args",), "judge_mass_check": ("no_mass_check",),
              "emotion_labels": ("emotion_label",),
              "adherence": ("no_adherence",)}
    explicit = {key for key in fields if any(given(ctx, p) for p in params.get(key, (key,)))}
    if config is None:
        explicit = set(fields)
    fields = {k: v for k, v in fields.items() if k in explicit and v is not None and v != {}}
    for role, values in parse_timeouts(timeout or []).items():
        fields.setdefault(role, {}).update(values)
    specs = []
    for m in models:
        therapist = role_fields(m, endpoint, api_key_env, backend)
        one = dict(fields)
        if therapist or config is None:
            one["therapist"] = {**therapist, **fields.get("therapist", {})}
        if len(models) > 1 and out is not None:
            one["out"] = out / Path(str(m)).name
        specs.append(build_spec(EvalSpec, one, config))
    from evalkit.cli.display import RichReporter, print_summary
    if print_config:
        for spec in specs:
            print(("---\n" if len(specs) > 1 else "") + spec.to_yaml(), end="")
        return
    from evalkit.pipeline.api import write_run_report
    from evalkit.pipeline.evaluate import evaluate_many

    results = run_async_command(evaluate_many(specs, reporter=RichReporter(enabled=not quiet), command=sys.argv))
    for result in results if any(spec.report for spec in specs) else []:
        write_run_report(result.directory)
    for result in results:
        if not quiet:
            names = {r.id: {**{i.id: i.name for i in r.items}, **{c.id: c.name for c in r.composites}}
                     for r in rubrics_of(result.directory)}
            print_summary(result.summary, names)
        console.print(f"results: [bold]{escape(str(result.directory))}[/bold] · report: "
                      f"[bold]{escape(str(result.directory / 'report.html'))}[/bold]", soft_wrap=True)
        retry_line(result.manifest)
        judge_line(result)
    track_runs([r.directory for r in results], mlflow, wandb)
    if compare_runs and len(results) > 1:
        from evalkit.cli.display import print_comparison
        from evalkit.pipeline.api import compare as run_compare

        comparison, out_dir = run_compare([r.directory for r in results])
        print_comparison(comparison, out_dir)


def judge_line(result) -> None:
    """A warning when the run's judge is unchecked or failed its fitness check (the report and the gate say it too)."""
    from evalkit.analysis.runs import judge_fitness_warning

    if text := judge_fitness_warning(result.manifest, judged=result.summary.reference is None):
        warn(text)


def retry_line(manifest) -> None:
    """The run's retry volume, when there was any: requests sent again per role and cause (also in the manifest)."""
    shared: dict[str, list[str]] = {}  # roles played by one backend share its counts: shown once
    for role, record in manifest.roles.items():
        if record.retries:
            shared.setdefault(record.model_dump_json(include={"kind", "model", "endpoint", "retries"}), []).append(role)
    parts = []
    for roles in shared.values():
        retries = manifest.roles[roles[0]].retries
        causes = ", ".join(f"{cause}: {n}" for cause, n in sorted(retries.items(), key=lambda kv: -kv[1]))
        parts.append(f"{'/'.join(roles)} {sum(retries.values())} ({causes})")
    if parts:
        console.print(f"retries: {escape('; '.join(parts))} requests sent again (recorded in manifest.json)", soft_wrap=True)


def track(
    runs: Annotated[list[Path], typer.Argument(help="Stored run directories.")],
    mlflow: Annotated[Optional[str], typer.Option(help="MLflow tracking URI (e.g. file:./mlruns).")] = None,
    wandb: Annotated[Optional[str], typer.Option(help="Weights & Biases PROJECT[:ENTITY] (WANDB_MODE=offline works offline).")] = None,
) -> None:
    """Log stored runs (configuration, summary metrics, files) to MLflow and/or Weights & Biases."""
    if not (mlflow or wandb):
        raise typer.BadParameter("give --mlflow and/or --wandb", param_hint="--mlflow / --wandb")
    from evalkit.store.rundir import RunDir

    for run_dir in runs:
        RunDir(run_dir).require_manifest()
    track_runs(runs, mlflow, wandb)


def rescore(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="The stored run whose transcripts are re-judged.")],
    out: Annotated[Path, typer.Option(help="The new run directory (same command again resumes it).")],
    judge_model: Annotated[Optional[str], typer.Option(help="The new judge's model (path or hub id: managed vLLM).")] = None,
    judge_endpoint: Annotated[Optional[list[str]], typer.Option(help="The new judge's endpoint; repeat for replicas.")] = None,
    judge_api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the judge endpoint's API key.")] = None,
    judge_backend: Annotated[str, typer.Option(help="How the judge is run (as run's --backend).")] = "auto",
    rubric: Annotated[Optional[list[str]], typer.Option(help="Only these rubrics (default: every scorer of the run).")] = None,
    judge_min_mass: Annotated[float, typer.Option(help="As for run.")] = 0.5,
    no_adherence: Annotated[bool, typer.Option("--no-adherence", help="Do not re-check persona adherence.")] = False,
    judge_concurrency: Annotated[int, typer.Option(help="Judge requests in flight at once.")] = 64,
    rejudge_invalid: Annotated[bool, typer.Option("--rejudge-invalid", help="Ask again for every invalid row.")] = False,
    include_flagged: Annotated[Optional[bool], typer.Option("--include-flagged/--exclude-flagged", help="Keep (or leave out) flagged sessions (default: as the source run recorded).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or tables.")] = False,
) -> None:
    """Re-judge a stored run's transcripts with another judge into a new run (like inspect score)."""
    from evalkit.cli.display import RichReporter, print_summary
    from evalkit.pipeline.api import rescore_async as do_rescore
    from evalkit.pipeline.spec import RoleConfig

    if not (judge_model or judge_endpoint):
        raise typer.BadParameter("give the new judge", param_hint="--judge-model / --judge-endpoint")
    if not 0 <= judge_min_mass <= 1 or judge_concurrency < 1:
        raise typer.BadParameter("expected a probability and a positive number", param_hint="--judge-min-mass / --judge-concurrency")
    judge = RoleConfig(**role_fields(judge_model, judge_endpoint, judge_api_key_env, judge_backend))
    result = run_async_command(do_rescore(run_dir, judge=judge, out=out, rubrics=rubric, judge_min_mass=judge_min_mass,
                                          adherence=not no_adherence, judge_concurrency=judge_concurrency,
                                          rejudge_invalid=rejudge_invalid, include_flagged=include_flagged,
                                          reporter=RichReporter(enabled=not quiet),
                                          command=sys.argv))
    if not quiet:
        rubrics = rubrics_of(result.directory)
        print_summary(result.summary, {r.id: {**{i.id: i.name for i in r.items}, **{c.id: c.name for c in r.composites}} for r in rubrics})
    console.print(f"rescored: [bold]{escape(str(result.directory))}[/bold] (transcripts of {escape(str(run_dir))})", soft_wrap=True)
    retry_line(result.manifest)
    judge_line(result)


def demo(
    out: Annotated[Path, typer.Option(help="Run directory; the same command again resumes it, and starts no server when nothing is left to do.")] = Path("results/demo"),
    suite: Annotated[str, typer.Option(help="Built-in suite id or a suite YAML path.")] = "tes",
    sessions: Annotated[int, typer.Option(help="Sessions to run.")] = 3,
    turns: Annotated[int, typer.Option(help="Therapist turns per session.")] = 3,
) -> None:
    """A real conversation end to end on this machine: SmolLM2-135M-Instruct (installed by scripts/install-cpu.sh,
    converted once into your cache) plays the therapist and the simulated client on vLLM's CPU build, and judges.

    A 135M model is not fit to judge (evalkit judge check says so): the demo reads its scores without the
    minimum-mass rule and keeps sessions its client flagged, and says so, so you see numbers; they show the
    mechanics, not clinical quality. Point --judge-endpoint of `evalkit run` at a real judge for real scores.
    """
    from evalkit.cli.display import RichReporter, print_summary
    from evalkit.models.smollm2 import fetch
    from evalkit.pipeline.api import write_run_report
    from evalkit.pipeline.evaluate import evaluate
    from evalkit.pipeline.spec import EvalSpec

    # Eager mode: for a model this small, torch.compile's warm-up costs more than it saves.
    fields = {"suite": suite, "sessions": sessions, "turns": turns, "max_tokens": 96, "max_model_len": 4096,
              "vllm_args": ["--dtype", "float32", "--enforce-eager"], "out": out, "judge_min_mass": 0.0,
              "include_flagged": True}
    build_spec(EvalSpec, {**fields, "therapist": {"model": "smollm2"}}, None)  # bad flags fail before anything is built
    model = fetch()  # converted once; a no-op afterwards
    spec = build_spec(EvalSpec, {**fields, "therapist": {"model": str(model)}}, None)
    result = run_async_command(evaluate(spec, reporter=RichReporter(), command=sys.argv))
    report = write_run_report(result.directory)
    console.print("[bold yellow]what these numbers are:[/bold yellow] scored by the 135M demo model itself, with the "
                  "minimum-mass rule off and flagged sessions kept: they show the mechanics, not clinical evidence. A 135M "
                  "judge is not fit to rate (try `evalkit judge check --judge-model " + escape(str(model)) + "`); for real "
                  "scores run `evalkit run --model ... --judge-endpoint URL` with a judge that passes it.", soft_wrap=True)
    print_summary(result.summary, {r.id: {i.id: i.name for i in r.items} for r in rubrics_of(result.directory)})
    console.print(f"demo finished: a real conversation is in [bold]{escape(str(result.directory / 'transcripts.jsonl'))}[/bold]; "
                  f"report: [bold]{escape(str(report))}[/bold]", soft_wrap=True)


def runs(
    root: Annotated[Path, typer.Argument(help="Folder to look in (default: results).")] = Path("results"),
) -> None:
    """List the runs under a folder: suite, model, status, sessions, judge, when."""
    from evalkit.cli.display import print_listing
    from evalkit.store.rundir import find_runs

    rows = [(str(directory), manifest.config.suite.id, manifest.roles["therapist"].model, manifest.status,
             f"{manifest.counts.sessions}/{manifest.sessions_requested}",
             manifest.roles["judge"].model if "judge" in manifest.roles else "—", f"{manifest.started_at:%Y-%m-%d %H:%M}")
            for directory, manifest in find_runs(root)]
    if rows:
        print_listing(f"runs under {root}", ("run", "suite", "model", "status", "sessions", "judge", "started"), rows)
    else:
        console.print(f"no evalkit runs under {escape(str(root))}")
