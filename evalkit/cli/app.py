"""The `evalkit` command: a thin typer skin over the Python API.

Each command builds the library's typed inputs from its flags, calls one library function, and prints.
Bad input or environment (`EvalkitError`, or a usage error) prints one line and exits 2, naming the flag
where the library named a field; SIGTERM and Ctrl-C stop cleanly with exit 130.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from evalkit.core.console import console
from evalkit.core.errors import ConfigError, EvalkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Clinical-fidelity evaluation of counselling language models.")
T = TypeVar("T")

# Library field -> the flag a user typed, for one-line errors that name what to change.
FIELD_FLAGS = {
    "include_flagged": "--include-flagged",
    "therapist.model": "--model", "therapist.endpoint": "--endpoint", "therapist.api_key_env": "--api-key-env",
    "therapist.backend": "--backend", "client.model": "--client-model", "client.endpoint": "--client-endpoint",
    "client.api_key_env": "--client-api-key-env", "client.backend": "--client-backend", "judge.model": "--judge-model",
    "judge.endpoint": "--judge-endpoint", "judge.api_key_env": "--judge-api-key-env", "judge.backend": "--judge-backend",
    "therapist model": "--model", "client model": "--client-model", "judge model": "--judge-model",
    "judge_validation": "--judge-validation", "judge_concurrency": "--judge-concurrency", "judge_min_mass": "--judge-min-mass",
    "adherence_threshold": "--adherence-threshold", "max_tokens": "--max-tokens", "max_model_len": "--max-model-len",
    "top_p": "--top-p", "replay_client": "--replay-client", "scripted_client": "--scripted-client", "sessions": "--sessions",
    "turns": "--turns", "concurrency": "--concurrency", "temperature": "--temperature", "seed": "--seed", "lora": "--lora",
    "resume": "--resume", "output directory": "--out", "api_key_env": "--api-key-env",
    "max_invalid_rate": "--max-invalid-rate", "min_shared": "--min-shared", "alpha": "--alpha", "power": "--power",
    "margin": "--margin", "sd": "--sd", "reward_endpoint": "--reward-endpoint",
}


def _flagged(message: str) -> str:
    """Replace library field names in an error message with the flags that set them."""
    message = re.sub(r"field '([a-z_.]+)'", lambda m: FIELD_FLAGS.get(m.group(1), f"field '{m.group(1)}'"), message)
    for field, flag in sorted(FIELD_FLAGS.items(), key=lambda kv: -len(kv[0])):
        if message.startswith(f"{field} ") or message.startswith(f"{field}:"):
            return flag + message[len(field):]
    return message


def run_async_command(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; SIGTERM cancels it exactly like Ctrl-C (foreground or background job)."""
    async def main() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)  # type: ignore[union-attr]
            handled = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (e.g. an in-process test runner)
            handled = False
        try:
            return await coro
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGTERM)
    return asyncio.run(main())


def _version(value: bool) -> None:
    if value:
        from evalkit.core.version import __version__

        print(f"evalkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Clinical-fidelity evaluation of counselling language models."""


def _kinds_help() -> str:
    return "auto (an endpoint: openai; a path: vllm), openai, vllm, vllm-offline, transformers, mock, or a registered kind"


def _role(model: str | None, endpoints: list[str] | None, key_env: str | None, backend: str) -> dict[str, Any]:
    return {k: v for k, v in {"model": model, "endpoint": endpoints or None, "api_key_env": key_env,
                              "backend": backend if backend != "auto" else None}.items() if v is not None}


_TIMEOUT = re.compile(r"^(?:(therapist|client|judge):)?(connect|first_byte|first-byte|total|deadline)=([0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")


def _timeouts(values: list[str]) -> dict[str, dict[str, float]]:
    """--timeout [ROLE:]KIND=SECONDS, KIND one of connect, first-byte, total, deadline; no role: every role."""
    out: dict[str, dict[str, float]] = {}
    for value in values:
        match = _TIMEOUT.match(value.strip())
        if not match:
            raise typer.BadParameter(f"'{value}': expected [ROLE:]KIND=SECONDS, KIND one of connect, first-byte, total, deadline",
                                     param_hint="--timeout")
        role, kind, seconds = match.groups()
        if float(seconds) <= 0:
            raise typer.BadParameter(f"'{value}': seconds must be positive", param_hint="--timeout")
        for name in ([role] if role else ["therapist", "client", "judge"]):
            out.setdefault(name, {})[f"timeout_{kind.replace('-', '_')}"] = float(seconds)
    return out


def _vllm_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise typer.BadParameter(f"'{text}': {exc}", param_hint="--vllm-args") from None


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise typer.BadParameter(f"'{value}': expected NAME=PATH", param_hint=flag)
        out[name.strip()] = path.strip()
    return out


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed this option (a config file's value then gives way to it)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


@app.command("run")
def run_command(
    ctx: typer.Context,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Model under test: a local path or hub id (managed vLLM), or the served name at --endpoint. Repeat to evaluate several checkpoints, each into its own run.")] = None,
    suite: Annotated[str, typer.Option("--suite", "-s", help="Built-in suite id or a suite YAML path.")] = "act-fm",
    config: Annotated[Optional[Path], typer.Option(help="A run configuration YAML with any of these settings; flags given here override it.")] = None,
    endpoint: Annotated[Optional[list[str]], typer.Option(help="OpenAI-compatible endpoint serving the model under test; repeat for replicas.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the endpoint's API key.")] = None,
    backend: Annotated[str, typer.Option(help=f"How the model under test is run: {_kinds_help()}.")] = "auto",
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
    timeout: Annotated[Optional[list[str]], typer.Option(help="[ROLE:]KIND=SECONDS with KIND connect, first-byte, total or deadline (default 10, 120, 150, 180); repeat.")] = None,
    max_model_len: Annotated[Optional[int], typer.Option(help="Context length for managed vLLM servers.")] = None,
    vllm_args: Annotated[str, typer.Option(help="Extra arguments for managed vLLM servers, e.g. \"--dtype float32\".")] = "",
    reasoning_parser: Annotated[Optional[str], typer.Option(help="Start managed vLLM servers with this --reasoning-parser (reasoning models).")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Let transformers/vLLM run the checkpoint's own code.")] = False,
    judge_min_mass: Annotated[float, typer.Option(help="The judge must put this much of its own probability on the allowed answers, or the score is invalid.")] = 0.5,
    no_mass_check: Annotated[bool, typer.Option("--no-mass-check", help="Constrained judges: skip the twin request that measures that probability.")] = False,
    adherence_threshold: Annotated[float, typer.Option(help="Flag sessions whose simulated client passes fewer of its persona checks.")] = 0.8,
    no_adherence: Annotated[bool, typer.Option("--no-adherence", help="Do not check simulated client turns against their persona.")] = False,
    include_flagged: Annotated[bool, typer.Option("--include-flagged", help="Keep flagged sessions in the summary.")] = False,
    replay_client: Annotated[Optional[Path], typer.Option(help="Re-use a stored run's client turns while the therapist's replies match it (low-noise gates).")] = None,
    scripted_client: Annotated[Optional[Path], typer.Option(help="Take every client turn from a scripts YAML (deterministic checks).")] = None,
    judge_validation: Annotated[Optional[Path], typer.Option(help="The judge's validation.json (evalkit judge validate), recorded in the manifest.")] = None,
    emotion_model: Annotated[Optional[Path], typer.Option(help="Reference suites: a sequence-classification model (transformers) for emotion accuracy.")] = None,
    emotion_label: Annotated[Optional[list[str]], typer.Option(help="MODEL_LABEL=DATASET_LABEL mapping of the emotion classifier's labels; repeat.")] = None,
    reward_endpoint: Annotated[Optional[str], typer.Option(help="vLLM server of a reward model, for suites that score with it ({rubric: reward, scorer: reward}).")] = None,
    compare_runs: Annotated[bool, typer.Option("--compare", help="With several checkpoints: compare their runs afterwards.")] = False,
    mlflow: Annotated[Optional[str], typer.Option(help="Log the run to MLflow at this tracking URI (e.g. file:./mlruns).")] = None,
    wandb: Annotated[Optional[str], typer.Option(help="Log the run to this Weights & Biases project (WANDB_MODE=offline works offline).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or tables.")] = False,
) -> None:
    """Simulate sessions against a model, score them, and write a run directory."""
    from evalkit.pipeline.spec import EvalSpec

    models = model or [None]
    fields: dict[str, Any] = {
        "suite": suite, "client": _role(client_model, client_endpoint, client_api_key_env, client_backend),
        "judge": _role(judge_model, judge_endpoint, judge_api_key_env, judge_backend), "lora": _pairs(lora or [], "--lora"),
        "sessions": sessions, "turns": turns, "concurrency": concurrency, "judge_concurrency": judge_concurrency, "out": out,
        "resume": resume, "rejudge_invalid": rejudge_invalid, "max_tokens": max_tokens, "temperature": temperature,
        "top_p": top_p, "seed": seed, "max_model_len": max_model_len, "vllm_args": _vllm_args(vllm_args),
        "reasoning_parser": reasoning_parser, "trust_remote_code": trust_remote_code, "judge_min_mass": judge_min_mass,
        "judge_mass_check": not no_mass_check, "adherence": not no_adherence, "adherence_threshold": adherence_threshold,
        "include_flagged": include_flagged, "replay_client": replay_client, "scripted_client": scripted_client,
        "judge_validation": judge_validation, "emotion_model": emotion_model,
        "emotion_labels": _pairs(emotion_label or [], "--emotion-label"), "reward_endpoint": reward_endpoint}
    params = {"client": ("client_model", "client_endpoint", "client_api_key_env", "client_backend"),
              "judge": ("judge_model", "judge_endpoint", "judge_api_key_env", "judge_backend"),
              "lora": ("lora",), "vllm_args": ("vllm_args",), "judge_mass_check": ("no_mass_check",),
              "emotion_labels": ("emotion_label",),
              "adherence": ("no_adherence",)}
    explicit = {key for key in fields if any(_given(ctx, p) for p in params.get(key, (key,)))}
    if config is None:
        explicit = set(fields)
    fields = {k: v for k, v in fields.items() if k in explicit and v is not None and v != {}}
    for role, values in _timeouts(timeout or []).items():
        fields.setdefault(role, {}).update(values)
    specs = []
    for m in models:
        therapist = _role(m, endpoint, api_key_env, backend)
        one = dict(fields)
        if therapist or config is None:
            one["therapist"] = {**therapist, **fields.get("therapist", {})}
        if len(models) > 1 and out is not None:
            one["out"] = out / Path(str(m)).name
        specs.append(_spec(EvalSpec, one, config))
    from evalkit.cli.display import RichReporter, print_summary
    from evalkit.pipeline.runner import evaluate_many

    results = run_async_command(evaluate_many(specs, reporter=RichReporter(enabled=not quiet), command=sys.argv))
    for result in results:
        if not quiet:
            names = {r.id: {**{i.id: i.name for i in r.items}, **{c.id: c.name for c in r.composites}}
                     for r in _rubrics(result.directory)}
            print_summary(result.summary, names)
        console.print(f"results: [bold]{escape(str(result.directory))}[/bold] · report: "
                      f"[bold]{escape(str(result.directory / 'report.html'))}[/bold]", soft_wrap=True)
    _track([r.directory for r in results], mlflow, wandb)
    if compare_runs and len(results) > 1:
        from evalkit.analysis.compare import compare as run_compare
        from evalkit.cli.display import print_comparison

        comparison, out_dir = run_compare([r.directory for r in results])
        print_comparison(comparison, out_dir)


def _track(directories: list[Path], mlflow: str | None, wandb: str | None) -> None:
    from evalkit.pipeline import tracking

    for directory in directories:
        if mlflow:
            console.print(f"mlflow: logged {escape(str(directory))} as run {tracking.log_mlflow(directory, mlflow)}", soft_wrap=True)
        if wandb:
            project, _, entity = wandb.partition(":")
            console.print(f"wandb: logged {escape(str(directory))} as run {tracking.log_wandb(directory, project, entity=entity or None)}",
                          soft_wrap=True)


@app.command()
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
    _track(runs, mlflow, wandb)


def _rubrics(directory: Path):
    from evalkit.store.rundir import RunDir

    return RunDir(directory).suite().rubrics


def _spec(model, fields: dict[str, Any], config: Path | None):
    from pydantic import ValidationError

    if config is not None:
        return model.from_file(config, fields)
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{FIELD_FLAGS.get(where, where)}: {message}" if where else message) from None


@app.command()
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or tables.")] = False,
) -> None:
    """Re-judge a stored run's transcripts with another judge into a new run (like inspect score)."""
    from evalkit.cli.display import RichReporter, print_summary
    from evalkit.pipeline.runner import rescore_async as do_rescore
    from evalkit.pipeline.spec import RoleConfig

    if not (judge_model or judge_endpoint):
        raise typer.BadParameter("give the new judge", param_hint="--judge-model / --judge-endpoint")
    if not 0 <= judge_min_mass <= 1 or judge_concurrency < 1:
        raise typer.BadParameter("expected a probability and a positive number", param_hint="--judge-min-mass / --judge-concurrency")
    judge = RoleConfig(**_role(judge_model, judge_endpoint, judge_api_key_env, judge_backend))
    result = run_async_command(do_rescore(run_dir, judge=judge, out=out, rubrics=rubric, judge_min_mass=judge_min_mass,
                                          adherence=not no_adherence, judge_concurrency=judge_concurrency,
                                          rejudge_invalid=rejudge_invalid, reporter=RichReporter(enabled=not quiet),
                                          command=sys.argv))
    if not quiet:
        rubrics = _rubrics(result.directory)
        print_summary(result.summary, {r.id: {**{i.id: i.name for i in r.items}, **{c.id: c.name for c in r.composites}} for r in rubrics})
    console.print(f"rescored: [bold]{escape(str(result.directory))}[/bold] (transcripts of {escape(str(run_dir))})", soft_wrap=True)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories, one per condition.")],
    baseline: Annotated[Optional[Path], typer.Option(help="Baseline run (e.g. GPT-4o): win rates of every run against it.")] = None,
    metric: Annotated[Optional[list[str]], typer.Option(help="Metric(s) to analyse, e.g. act-fm.consistency_total (default: all).")] = None,
    matched: Annotated[bool, typer.Option("--matched", help="Analyse only the sessions every run shares.")] = False,
    include_flagged: Annotated[bool, typer.Option("--include-flagged", help="Keep sessions whose simulated client fell below the adherence threshold (left out by default).")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Where comparison.json and tables go (default: beside the runs).")] = None,
    pairwise_judge_model: Annotated[Optional[str], typer.Option(help="Judge for pairwise preference against the baseline (model path/id).")] = None,
    pairwise_judge_endpoint: Annotated[Optional[str], typer.Option(help="Endpoint of the pairwise judge.")] = None,
    pairwise_judge_api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the pairwise judge's API key.")] = None,
    pairwise_reward_endpoint: Annotated[Optional[str], typer.Option(help="A vLLM server running a reward model (pooling API) as the pairwise judge.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap rounds for Bradley-Terry CIs (0: none).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed for the bootstrap.")] = 0,
) -> None:
    """Statistics across stored runs: mixed model (F test), nonparametric tests, corrected contrasts, win rates, Bradley-Terry."""
    from evalkit.analysis.compare import compare as run_compare
    from evalkit.backends.roles import RoleSpec
    from evalkit.cli.display import print_comparison

    if bootstrap < 0:
        raise typer.BadParameter("expected 0 or more rounds", param_hint="--bootstrap")
    judge = None
    if pairwise_judge_model or pairwise_judge_endpoint:
        judge = RoleSpec(pairwise_judge_model, pairwise_judge_endpoint, pairwise_judge_api_key_env)
    comparison, out_dir = run_compare(runs, baseline=baseline, metrics=metric, matched=matched, include_flagged=include_flagged,
                                      out=out, pairwise_judge=judge, pairwise_reward_endpoint=pairwise_reward_endpoint,
                                      bootstrap_rounds=bootstrap, seed=seed)
    print_comparison(comparison, out_dir)


@app.command("gate")
def gate_command(
    baseline: Annotated[Path, typer.Option(help="The released model's stored run.")],
    candidate: Annotated[Path, typer.Option(help="The new checkpoint's stored run.")],
    metric: Annotated[Optional[list[str]], typer.Option(help="Metric(s) to gate (default: the suite's).")] = None,
    margin: Annotated[Optional[float], typer.Option(help="Non-inferiority margin for every gated metric (default: the suite's).")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="One-sided significance level, in (0, 0.5) (default: the suite's, 0.05).")] = None,
    power: Annotated[Optional[float], typer.Option(help="Power a regression verdict needs, in (0, 1) (default: the suite's, 0.8).")] = None,
    max_invalid_rate: Annotated[Optional[float], typer.Option(help="Most sessions of a gated metric that may be invalid, per metric (default 0.05).")] = None,
    min_shared: Annotated[float, typer.Option(help="Share of the baseline's sessions the candidate must also have (default 1: all).")] = 1.0,
    include_flagged: Annotated[bool, typer.Option("--include-flagged", help="Keep sessions whose simulated client was flagged.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Where gate.json, gate-junit.xml and gate.md go (default: the candidate run).")] = None,
    require_validated_judge: Annotated[bool, typer.Option("--require-validated-judge", help="Cannot decide unless both runs recorded a judge validation report.")] = False,
) -> None:
    """Non-inferiority gate for CI: exit 0 pass, 1 regression, 2 cannot decide (files are written in every case)."""
    from evalkit.analysis.gate import EXIT, gate
    from evalkit.cli.display import print_gate

    report, out_dir = gate(baseline, candidate, metrics=metric, margin=margin, alpha=alpha, power=power,
                           max_invalid_rate=max_invalid_rate, min_shared=min_shared, include_flagged=include_flagged,
                           out=out, require_validated_judge=require_validated_judge)
    if report.verdict == "undecided":  # the files are written; the terminal gets one line
        raise EvalkitError(f"cannot decide: {report.reason} (details: {out_dir / 'gate.md'})")
    print_gate(report, out_dir)
    raise typer.Exit(EXIT[report.verdict])


@app.command()
def plan(
    metric: Annotated[str, typer.Option(help="Metric, e.g. tes.total.")],
    margin: Annotated[float, typer.Option(help="Non-inferiority margin, in the metric's units (> 0).")],
    sd: Annotated[Optional[float], typer.Option(help="SD of paired per-session differences (> 0).")] = None,
    run: Annotated[Optional[list[Path]], typer.Option(help="Two stored runs of the same suite: the SD of their matched per-session differences.")] = None,
    detect: Annotated[Optional[float], typer.Option(help="The true drop the gate should catch (default: one margin).")] = None,
    power: Annotated[float, typer.Option(help="Probability wanted, in (0, 1).")] = 0.8,
    alpha: Annotated[float, typer.Option(help="One-sided significance level, in (0, 0.5).")] = 0.05,
) -> None:
    """Sessions a gate needs: to pass an equal candidate, and to detect a given drop, each with the stated power."""
    from evalkit.analysis.gate import plan_sessions
    from evalkit.cli.display import print_plan

    print_plan(metric, plan_sessions(metric, margin, sd=sd, runs=run, detect=detect, power=power, alpha=alpha))


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="One or more run directories.")],
    out: Annotated[Optional[Path], typer.Option(help="HTML file to write (default: RUN/report.html, or beside the runs).")] = None,
    comparison: Annotated[Optional[Path], typer.Option(help="A comparison.json to include (from evalkit compare).")] = None,
) -> None:
    """Write a self-contained HTML report (opens offline) for stored runs."""
    from evalkit.report import build_report, read_comparison

    path = build_report(runs, out, comparison=read_comparison(comparison) if comparison else None)
    console.print(f"report: [bold]{escape(str(path))}[/bold]", soft_wrap=True)


@app.command("lm-eval-path")
def lm_eval_path() -> None:
    """Print the folder of evalkit's lm-eval-harness tasks, for `lm_eval --include_path`."""
    from evalkit.core.resources import lm_eval_tasks_dir

    print(lm_eval_tasks_dir())


@app.command()
def demo(
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default: results/demo-<configuration hash>).")] = None,
    sessions: Annotated[int, typer.Option(help="Sessions to run.")] = 4,
    turns: Annotated[int, typer.Option(help="Therapist turns per session.")] = 3,
) -> None:
    """Build a tiny random-weight model, serve it with vLLM, and run a small act-fm suite end to end.

    The model is noise: the demo shows the mechanics (serving, simulation, judging, results), not clinical quality.
    """
    from evalkit.cli.display import RichReporter, print_summary
    from evalkit.models.tiny import build_tiny_model
    from evalkit.pipeline.runner import evaluate
    from evalkit.pipeline.spec import EvalSpec

    # Eager mode: for a model this small, torch.compile's warm-up costs more than it saves. A random model puts
    # almost no probability on score digits, so the demo reads scores without the minimum-mass rule.
    fields = {"suite": "act-fm", "sessions": sessions, "turns": turns, "max_tokens": 48, "max_model_len": 4096,
              "vllm_args": ["--dtype", "float32", "--enforce-eager"], "out": out, "judge_min_mass": 0.0}
    _spec(EvalSpec, {**fields, "therapist": {"model": "tiny"}}, None)  # bad flags fail before the model is built
    console.print("building the tiny demo model (cached after the first time)…")
    model_dir = build_tiny_model()
    spec = _spec(EvalSpec, {**fields, "therapist": {"model": str(model_dir)}}, None)
    result = run_async_command(evaluate(spec, reporter=RichReporter(), command=sys.argv))
    print_summary(result.summary, {r.id: {i.id: i.name for i in r.items} for r in _rubrics(result.directory)})
    console.print(f"demo finished: transcripts, scores and summary are in [bold]{escape(str(result.directory))}[/bold]", soft_wrap=True)


@app.command()
def suites() -> None:
    """List the built-in suites with their unit, rubrics and sizes."""
    from evalkit.content.suites import available_suites, load_suite

    table = Table(title="evalkit suites", title_justify="left")
    for column in ("suite", "unit", "rubrics", "items", "clients", "turns"):
        table.add_column(column, overflow="fold")
    loaded_suites = [load_suite(suite_id) for suite_id in available_suites()]
    for loaded in loaded_suites:
        s = loaded.suite
        clients = f"{len(loaded.sources)} {'personas' if s.unit == 'session' else 'utterances'}"
        rubric_list = ", ".join(f"{r.id} {r.version}" + (" (risk personas)" if u.applies_to == "risk" else "")
                                for u, r in zip(s.rubrics, loaded.rubrics, strict=True))
        table.add_row(s.id, s.unit, rubric_list, str(sum(len(r.items) for r in loaded.rubrics)), clients, str(s.turns))
    console.print(table)
    for loaded in loaded_suites:
        console.print(f"[bold]{loaded.suite.id}[/bold]: {escape(loaded.suite.description)}", soft_wrap=True)


@app.command()
def personas(
    coverage: Annotated[bool, typer.Option("--coverage", help="Print the coverage matrix and the suites' disclosure schedules; exit 1 when either falls short.")] = False,
    directory: Annotated[Optional[Path], typer.Option("--dir", help="A persona folder (default: the built-in library).")] = None,
) -> None:
    """List the simulated-client personas, or check the library's coverage."""
    from evalkit.content.coverage import crossed_counts, load_coverage_spec, shortfalls, suite_schedule_problems
    from evalkit.content.personas import load_personas

    library = load_personas(directory)
    if not coverage:
        table = Table(title=f"{len(library)} personas", title_justify="left")
        for column in ("id", "problem", "archetype", "style", "openness", "risk"):
            table.add_column(column, overflow="fold")
        for p in library:
            table.add_row(p.id, p.presenting_problem, p.archetype, p.conversational_style, p.openness, p.risk_type)
        console.print(table)
        return
    spec = load_coverage_spec()
    for crossed in spec.crossed:
        a, b = crossed.dimensions
        counts = crossed_counts(library, spec, crossed)
        matrix = Table(title=f"{a} × {b} ({len(library)} personas; minimum {crossed.minimum})", title_justify="left")
        matrix.add_column(a)
        columns = list(spec.cells.get(b, {}))
        for value in columns:
            matrix.add_column(value, justify="right")
        for row in spec.cells.get(a, {}):
            matrix.add_row(row, *(f"[{'green' if counts[(row, c)] >= crossed.minimum else 'red'}]{counts[(row, c)]}[/]" for c in columns))
        console.print(matrix)
    cells = Table(title="declared cells", title_justify="left")
    for column in ("dimension", "value", "personas", "minimum"):
        cells.add_column(column)
    from collections import Counter

    for dimension, declared in spec.cells.items():
        have = Counter(getattr(p, dimension) for p in library)
        for value, minimum in declared.items():
            cells.add_row(dimension, value, f"[{'green' if have[value] >= minimum else 'red'}]{have[value]}[/]", str(minimum))
    console.print(cells)
    console.print(f"presenting problems: {len({p.presenting_problem for p in library})}; "
                  f"with risk: {sum(p.risk_level != 'none' for p in library)}")
    short = shortfalls(library, spec)
    schedules = suite_schedule_problems() if directory is None else {}
    for suite_id, problems in schedules.items():
        state = "[green]every disclosure reachable[/green]" if not problems else f"[red]{len(problems)} unreachable[/red]"
        console.print(f"suite {suite_id}: {state}")
    late = [f"{s}: {p}" for s, problems in schedules.items() for p in problems]
    if short or late:
        console.print(f"[bold red]coverage short:[/bold red] {escape('; '.join(short + late))}", soft_wrap=True)
        raise typer.Exit(1)


judge_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Judges: validate against human ratings, fine-tune on them, and measure preference accuracy.")
app.add_typer(judge_app, name="judge")


def _judge_role(model: str | None, endpoint: str | None, key_env: str | None, backend: str):
    from evalkit.backends.roles import RoleSpec

    return RoleSpec(model, endpoint, key_env, backend)


@judge_app.command("validate")
def judge_validate(
    ratings: Annotated[Path, typer.Option(help="Human ratings JSONL: material_id, rubric, item, rater, score, and turns (or run + session_id).")],
    judge_model: Annotated[Optional[str], typer.Option(help="Judge model path/id (managed vLLM).")] = None,
    judge_endpoint: Annotated[Optional[str], typer.Option(help="Judge endpoint.")] = None,
    judge_api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the judge endpoint's API key.")] = None,
    judge_backend: Annotated[str, typer.Option(help="How the judge is run (as run's --backend).")] = "auto",
    out: Annotated[Optional[Path], typer.Option(help="Folder for validation.json (default: results/judge-validation-<time>).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap rounds for the CIs (resampling materials), >= 0.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    repeats: Annotated[int, typer.Option(help="Score everything this many times (>= 1) and report how much scores move.")] = 1,
    judge_min_mass: Annotated[float, typer.Option(help="As for run: the judge's minimum probability on the score tokens.")] = 0.5,
) -> None:
    """Score human-rated material with the judge; report ICC, weighted kappa, Spearman, Krippendorff's alpha,
    MAE and exact/adjacent agreement with bootstrap CIs, human-human beside judge-human."""
    from datetime import datetime

    from evalkit.cli.display import print_validation
    from evalkit.judging.validation import validate_judge

    spec = _judge_role(judge_model, judge_endpoint, judge_api_key_env, judge_backend)
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
    console.print(f"trained {report_['method']} on {report_['examples']['train']} examples; validation loss {fmt(b['loss'])} → "
                  f"{fmt(a['loss'])}, accuracy {fmt(b['accuracy'])} → {fmt(a['accuracy'])}; judge: [bold]{escape(report_['judge'])}[/bold]",
                  soft_wrap=True)


@judge_app.command("eval-pref")
def judge_eval_pref(
    data: Annotated[Path, typer.Option(help="Preference pairs in PsychoCounsel-Preference format (parquet or JSONL).")],
    judge_model: Annotated[Optional[str], typer.Option(help="LLM judge (model path/id), asked in both orders.")] = None,
    judge_endpoint: Annotated[Optional[str], typer.Option(help="LLM judge endpoint.")] = None,
    judge_api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the judge endpoint's API key.")] = None,
    judge_backend: Annotated[str, typer.Option(help="How the judge is run (as run's --backend).")] = "auto",
    judge_min_mass: Annotated[float, typer.Option(help="The judge must put this much probability on A/B, or the verdict is invalid.")] = 0.5,
    reward_model: Annotated[Optional[Path], typer.Option(help="A sequence-classification reward model, run in-process by transformers.")] = None,
    reward_endpoint: Annotated[Optional[str], typer.Option(help="A vLLM server running a reward model (its pooling API).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N pairs (>= 1).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for eval-pref.json (default: results/eval-pref-<time>).")] = None,
) -> None:
    """Accuracy of a judge or reward model on human preference pairs (ties count half)."""
    from datetime import datetime

    from evalkit.judging.preference import evaluate_preference

    spec = _judge_role(judge_model, judge_endpoint, judge_api_key_env, judge_backend)
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
    console.print(f"{escape(report_['judge'])} ({report_['kind']}): accuracy {rate} on {report_['pairs']} pairs "
                  f"({report_['correct']} right, {report_['wrong']} wrong, {report_['ties']} ties, {report_['invalid']} invalid); "
                  f"{escape(str(path))}", soft_wrap=True)


import_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Turn published datasets (local files) into evalkit personas, utterances and reference items.")
app.add_typer(import_app, name="import")


@import_app.command("patient-psi")
def import_patient_psi(
    file: Annotated[Path, typer.Argument(help="Patient-Psi profiles JSON (a list of cognitive conceptualisations).")],
    out: Annotated[Path, typer.Option(help="Folder for the persona YAMLs (new or without clashing files); use it as a suite's persona_dir.")],
) -> None:
    """Patient-Psi cognitive-conceptualisation profiles -> one evalkit persona per profile and style."""
    from evalkit.content.loaders import import_patient_psi as do_import

    written = do_import(file, out)
    console.print(f"wrote {len(written)} personas to [bold]{escape(str(out))}[/bold]", soft_wrap=True)


@import_app.command("references")
def import_references(
    file: Annotated[Path, typer.Argument(help="Reference replies: EmpatheticDialogues-style CSV, a JSONL or a CSV (context, reply, emotion).")],
    out: Annotated[Path, typer.Option(help="JSONL to write (must not exist); use it as a reference suite's references_file.")],
) -> None:
    """Reference replies from a public format -> evalkit's reference JSONL (one item per therapist reply)."""
    from evalkit.content.references import load_reference_items
    from evalkit.core.fileio import ensure_directory, write_atomic

    items = load_reference_items(file)
    if out.exists():
        raise EvalkitError(f"--out {out}: already exists; nothing was written (choose another)")
    ensure_directory(out.parent, "--out")
    write_atomic(out, "".join(item.model_dump_json() + "\n" for item in items))
    console.print(f"wrote {len(items)} reference items to [bold]{escape(str(out))}[/bold]", soft_wrap=True)


@import_app.command("psychocounsel-preference")
def import_psychocounsel_preference(
    file: Annotated[Path, typer.Argument(help="PsychoCounsel-Preference as parquet or JSONL.")],
    out: Annotated[Path, typer.Option(help="Utterances YAML to write (must not exist); use it as a suite's utterances_file.")],
) -> None:
    """PsychoCounsel-Preference -> single-turn utterances (its questions) and a pairs JSONL beside them."""
    from evalkit.content.loaders import import_psychocounsel_preference as do_import

    utterances, pairs_path, n_utterances, n_pairs = do_import(file, out)
    console.print(f"wrote {n_utterances} utterances to [bold]{escape(str(utterances))}[/bold] and "
                  f"{n_pairs} preference pairs to [bold]{escape(str(pairs_path))}[/bold]", soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line and exit code 2 for bad input; 130 when interrupted (Ctrl-C or SIGTERM)."""
    try:
        result = app(args=argv, standalone_mode=False, prog_name="evalkit")
    except (KeyboardInterrupt, typer.Abort, asyncio.CancelledError):
        result = 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors; typer vendors click's exceptions under this base
        if not exc.format_message():  # bare `evalkit`: the help was printed, nothing went wrong
            return 0
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx else ""
        console.print(f"[bold red]error:[/bold red] {escape(exc.format_message())}{hint}", soft_wrap=True)
        return 2
    except EvalkitError as exc:
        console.print(f"[bold red]error:[/bold red] {escape(_flagged(str(exc)))}", soft_wrap=True)
        return 2
    if result == 130:
        console.print("[bold red]interrupted[/bold red]: finished work is kept; run the same command again to continue")
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
