"""The `vllm` kind: evalkit starts a vLLM OpenAI server for a local checkpoint (or hub id), talks to it over
HTTP like any endpoint, and stops it when the run's backends close (or, through the kernel's parent-death
signal, when evalkit dies)."""

from __future__ import annotations

import re
from pathlib import Path

from evalkit.backends.base import BackendSpec, BuildContext
from evalkit.backends.openai_http import OpenAIBackend
from evalkit.backends.vllm_server import ManagedVLLMServer, tail
from evalkit.core.console import console


def served_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model).name).strip("-") or "model"


async def build(spec: BackendSpec, context: BuildContext) -> OpenAIBackend:
    assert spec.model is not None
    name = spec.options.get("served_name") or served_name(spec.model)
    lora = spec.options.get("lora_modules") or {}
    server = ManagedVLLMServer(spec.model, served_name=name, log_path=context.log_dir / f"vllm-{name}.log",
                               max_model_len=context.max_model_len, extra_args=context.vllm_args,
                               lora_modules=lora, reasoning_parser=context.reasoning_parser)
    console.print(f"starting vLLM {server.version or ''} for {name} (log: {server.log_path})", markup=False)
    context.closers.append(server.stop)
    context.failure_explainers.append(
        lambda: f"vLLM for {name} exited with code {server.exit_code}: {tail(server.log_path, 3)}" if server.exit_code is not None else "")
    await server.start_async()  # Popen from this (main) thread: the parent-death signal is tied to it
    # A CPU build crashes on concurrent per-request seeds ("CPU Generator does not use offset"): never send them.
    backend = await OpenAIBackend.connect(server.url, spec.options.get("address_as") or name, kind="vllm",
                                          timeouts=spec.timeouts, send_seed=not server.is_cpu_build)
    backend.info.model_path, backend.info.model_hash = spec.model, spec.model_hash
    return backend
