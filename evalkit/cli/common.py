"""What every command shares: one-line errors that name flags, async commands that stop cleanly, option parsers."""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.markup import escape

from evalkit.core.console import console
from evalkit.core.errors import ConfigError

T = TypeVar("T")

# Commands that read stored runs: None follows the policy each run recorded when it was made.
IncludeFlagged = Annotated[Optional[bool], typer.Option(
    "--include-flagged/--exclude-flagged",
    help="Keep (or leave out) sessions whose simulated client failed a persona check (default: as each run recorded).")]

# Library field -> the flag a user typed, for one-line errors that name what to change.
FIELD_FLAGS = {
    "include_flagged": "--include-flagged",
    "therapist.model": "--model", "therapist.endpoint": "--endpoint", "therapist.api_key_env": "--api-key-env",
    "therapist.backend": "--backend", "client.model": "--client-model", "client.endpoint": "--client-endpoint",
    "client.api_key_env": "--client-api-key-env", "client.backend": "--client-backend", "judge.model": "--judge-model",
    "judge.endpoint": "--judge-endpoint", "judge.api_key_env": "--judge-api-key-env", "judge.backend": "--judge-backend",
    "therapist model": "--model", "client model": "--client-model", "judge model": "--judge-model",
    "judge_validation": "--judge-validation", "judge_check": "--judge-check", "judge_concurrency": "--judge-concurrency", "judge_min_mass": "--judge-min-mass",
    "adherence_threshold": "--adherence-threshold", "max_tokens": "--max-tokens", "max_model_len": "--max-model-len",
    "top_p": "--top-p", "replay_client": "--replay-client", "scripted_client": "--scripted-client", "sessions": "--sessions",
    "turns": "--turns", "concurrency": "--concurrency", "temperature": "--temperature", "seed": "--seed", "lora": "--lora",
    "resume": "--resume", "output directory": "--out", "api_key_env": "--api-key-env",
    "max_invalid_rate": "--max-invalid-rate", "min_shared": "--min-shared", "alpha": "--alpha", "power": "--power",
    "margin": "--margin", "sd": "--sd", "reward_endpoint": "--reward-endpoint",
    "sd_between": "--sd-between", "sd_within": "--sd-within", "replicates": "--replicates", "run": "--run",
    "primary": "--primary", "detect": "--detect", "skip_critical": "--skip-critical",
}


def flagged(message: str) -> str:
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
        outside = signal.getsignal(signal.SIGTERM)
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
                if outside is not None:
                    signal.signal(signal.SIGTERM, outside)  # back to what the command had (SIGTERM stops like Ctrl-C)
    return asyncio.run(main())


def kinds_help() -> str:
    return "auto (an endpoint: openai; a path: vllm), openai, vllm, vllm-offline, transformers, mock, or a registered kind"


def role_fields(model: str | None, endpoints: list[str] | None, key_env: str | None, backend: str) -> dict[str, Any]:
    return {k: v for k, v in {"model": model, "endpoint": endpoints or None, "api_key_env": key_env,
                              "backend": backend if backend != "auto" else None}.items() if v is not None}


def parse_timeouts(values: list[str]) -> dict[str, dict[str, float]]:
    """--timeout [ROLE:]KIND=SECONDS, KIND one of connect, first-byte, total, deadline; no role: every role."""
    from evalkit.pipeline.spec import parse_timeouts as parse

    try:
        return parse(values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--timeout") from None


def parse_vllm_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise typer.BadParameter(f"'{text}': {exc}", param_hint="--vllm-args") from None


def parse_pairs(values: list[str], flag: str) -> dict[str, str]:
    from evalkit.pipeline.spec import parse_pairs as parse

    try:
        return parse(values, flag)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from None


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed this option (a config file's value then gives way to it)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def rubrics_of(directory: Path):
    from evalkit.store.rundir import RunDir

    return RunDir(directory).suite().rubrics


def build_spec(model, fields: dict[str, Any], config: Path | None):
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


def track_runs(directories: list[Path], mlflow: str | None, wandb: str | None) -> None:
    from evalkit.pipeline import tracking

    for directory in directories:
        if mlflow:
            console.print(f"mlflow: logged {escape(str(directory))} as run {tracking.log_mlflow(directory, mlflow)}", soft_wrap=True)
        if wandb:
            project, _, entity = wandb.partition(":")
            console.print(f"wandb: logged {escape(str(directory))} as run {tracking.log_wandb(directory, project, entity=entity or None)}",
                          soft_wrap=True)
