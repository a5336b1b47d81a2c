"""Shared fixtures.

- `run_cli`: the `evalkit` command in-process (same entry point, same one-line errors, no interpreter start-up);
  `run_cli_subprocess` where a real process matters (signals, SIGKILL, a fresh import).
- `mock_backends`: the scripted `mock` backend (evalkit.backends.mock) for every test that is not about serving.
- `tiny_model` / `vllm_endpoint`: a tiny random-weight model built on the spot and ONE real vLLM (CPU build) server
  for the whole session, for the tests that are about serving.
"""

from __future__ import annotations

import contextlib
import io
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
# A random model puts almost no probability on score digits; tests that read its scores turn the minimum off.
RANDOM_JUDGE = ["--judge-min-mass", "0"]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.strip()]


def run_cli(*args: str | Path, cwd: Path | None = None, env: dict | None = None) -> CliResult:
    """`evalkit ARGS` in this process, as a user would type it; console and stdout captured."""
    from evalkit.cli.app import main
    from evalkit.core.console import console

    err, out = io.StringIO(), io.StringIO()
    saved_target, saved_cwd, saved_env = console.file.target, Path.cwd(), dict(os.environ)
    console.file.target = err
    try:
        if cwd is not None:
            os.chdir(cwd)
        os.environ.update({"COLUMNS": "200", **(env or {})})
        with contextlib.redirect_stdout(out):
            code = _in_fresh_thread_if_a_loop_runs(lambda: main([str(a) for a in args]))
    finally:
        console.file.target = saved_target
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return CliResult(code, out.getvalue(), err.getvalue())


def _in_fresh_thread_if_a_loop_runs(call):
    """Playwright's sync API keeps an event loop running in this thread; the CLI's asyncio.run needs one of its own."""
    import asyncio
    import threading

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    result: list = []
    worker = threading.Thread(target=lambda: result.append(call()))
    worker.start()
    worker.join()
    return result[0]


def run_cli_subprocess(*args: str | Path, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> CliResult:
    """Run `python -m evalkit ARGS` in a fresh process."""
    proc = subprocess.run([sys.executable, "-m", "evalkit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, "COLUMNS": "200", **(env or {})})
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """Exit 2, no traceback, and exactly one non-empty line of output that mentions every fragment."""
    assert result.code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert len(result.lines) == 1, result.output
    for fragment in fragments:
        assert fragment in result.lines[0], result.lines[0]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def passing_judge(messages, choices):
    """A mock judge that passes persona checks and finds risk surfaced (p=0.9), and spreads rubric scores by prompt."""
    from evalkit.backends.mock import hashed_distribution

    if choices == ["0", "1"]:
        return {"0": 0.1, "1": 0.9}
    return hashed_distribution(messages, choices)


@pytest.fixture
def mocks():
    """Three scripted backends: therapist, client and a judge that passes persona checks."""
    from evalkit.backends.mock import MockBackend

    return {"therapist": MockBackend(model="therapist-mock"), "client": MockBackend(model="client-mock"),
            "judge": MockBackend(model="judge-mock", distribution=passing_judge)}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from evalkit.models.tiny import build_tiny_model

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
                               extra_args=TINY_VLLM_ARGS.split(), log_path=tmp_path_factory.mktemp("vllm") / "server.log")
    server.start()
    yield server.url
    server.stop()


def check_scores(run_dir: Path, rubric_id: str, sessions: int) -> list[dict]:
    """Rows of one rubric: every session scored, each (session, item) once, distributions over the scale that sum to
    one, expectations inside the scale and equal to the distribution's mean, and a random model's spread (a point
    mass would mean sampling settings distorted the judge)."""
    from collections import Counter

    from evalkit.content.rubrics import load_rubric

    rubric = load_rubric(rubric_id)
    rows = [r for r in read_jsonl(run_dir / "scores.jsonl") if r["rubric"] == rubric_id]
    keys = Counter((r["session_id"], r["item"]) for r in rows)
    assert len({s for s, _ in keys}) == sessions and set(keys.values()) == {1}
    from evalkit.content.personas import load_personas
    from evalkit.judging.scorer import RubricScorer

    personas = {p.id: p for p in load_personas()}
    applies_to = "risk" if rubric.critical_items else "all"
    for session in {s for s, _ in keys}:  # exactly the items that apply to the session's persona (or utterance)
        source = personas.get(next(r["source_id"] for r in rows if r["session_id"] == session))
        wanted = {i.id for i in RubricScorer(rubric, applies_to=applies_to).items(source)}
        assert {item for s, item in keys if s == session} == wanted, session
    for row in rows:
        assert row["valid"], row
        dist, scale = row["distribution"], rubric.scale_of(rubric.item(row["item"]))
        assert sorted(map(int, dist)) == scale.levels
        assert abs(sum(dist.values()) - 1.0) < 1e-6
        assert scale.min <= row["expected"] <= scale.max
        assert abs(row["expected"] - sum(int(k) * p for k, p in dist.items())) < 1e-9
        assert sum(p > 0.02 for p in dist.values()) >= 2, dist
        assert row["mass"] is not None  # the judge's own probability on the score tokens is always recorded
    return rows


# Files that start vLLM servers or train models, slowest first: `--dist loadfile` hands files to the two workers in
# collection order, so starting with the long ones lets both workers finish together instead of one idling.
SLOW_FILES = ("test_real_model.py", "test_run_vllm.py", "test_judge_training.py", "test_formulation.py", "test_offline.py",
              "test_judge_validation.py", "test_replicas.py", "test_reward_vllm.py", "test_statistics_simulation.py",
              "test_lm_eval.py", "test_reasoning_model.py", "test_reliability.py", "test_bad_input.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))  # stable: a file's tests stay together
