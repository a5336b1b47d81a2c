"""Shared fixtures: a tiny random-weight model built on the spot, and a real vLLM (CPU build) serving it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Keep the tiny model's server small and quick to start: eager mode skips a ~40 s torch.compile warm-up.
TINY_VLLM_ARGS = "--dtype float32 --enforce-eager"
TINY_MAX_MODEL_LEN = "4096"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> CliResult:
    """Run `python -m evalkit ARGS` as a user would, in a fresh process."""
    proc = subprocess.run([sys.executable, "-m", "evalkit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, "COLUMNS": "200", **(env or {})})
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """Exit 2, no traceback, and exactly one non-empty line of output that mentions every fragment."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from evalkit.tinymodel import build_tiny_model

    prebuilt = os.environ.get("EVALKIT_TINY_MODEL")
    return build_tiny_model(Path(prebuilt) if prebuilt else tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def vllm_endpoint(tiny_model, tmp_path_factory) -> str:
    """One real vLLM server for the whole test session, started by hand (not by `evalkit run`).

    It serves its own copy of the model, so tests can tell its processes from servers evalkit manages.
    That copy carries aggressive sampling defaults, which vLLM applies to every request that leaves them
    unset: the judge must neutralise them or its distributions collapse to a point."""
    from evalkit.backends.vllm_server import ManagedVLLMServer

    served = tmp_path_factory.mktemp("served") / "tiny"
    shutil.copytree(tiny_model, served)
    generation_config = json.loads((served / "generation_config.json").read_text())
    generation_config.update(top_k=2, top_p=0.5, repetition_penalty=1.5)
    (served / "generation_config.json").write_text(json.dumps(generation_config))
    server = ManagedVLLMServer(str(served), served_name="tiny", max_model_len=int(TINY_MAX_MODEL_LEN),
                               extra_args=TINY_VLLM_ARGS.split(),
                               log_path=tmp_path_factory.mktemp("vllm") / "server.log")
    server.start()
    yield server.url
    server.stop()
