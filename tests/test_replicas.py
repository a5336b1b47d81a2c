"""Several endpoints for one role: least-outstanding spread, session pinning, failover.

The routing tests use in-process fake replicas, because they inject failures; the end-to-end
test uses two real vLLM CPU servers and kills one mid-run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from evalkit.backends.base import BackendInfo
from evalkit.backends.replicas import ReplicaPool, routing_key
from evalkit.core.errors import BackendUnavailable
from evalkit.core.types import ChoiceDistribution, Completion, SamplingParams

from .conftest import TINY_MAX_MODEL_LEN, TINY_VLLM_ARGS


class FakeReplica:
    def __init__(self, name: str, delay: float = 0.01):
        self.info = BackendInfo(kind="openai", model="m", endpoint=name)
        self.delay = delay
        self.seen: list[str | None] = []
        self.down = False

    async def chat(self, messages, params):
        await asyncio.sleep(self.delay)
        if self.down:
            raise BackendUnavailable(f"{self.info.endpoint} is down")
        self.seen.append(messages[0]["content"])
        return Completion(text="ok", finish_reason="stop", prompt_tokens=1, completion_tokens=1, latency_s=self.delay)

    async def choice_distribution(self, messages, choices, *, with_mass=True):
        await asyncio.sleep(self.delay)
        self.seen.append(messages[0]["content"])
        return ChoiceDistribution(probs={c: 1 / len(choices) for c in choices}, mass=None, constrained=True)

    async def aclose(self):
        pass


async def _sessions(pool: ReplicaPool, names: list[str], turns: int, fail_after: tuple[FakeReplica, int] | None = None):
    async def session(name: str) -> None:
        with routing_key(name):
            for turn in range(turns):
                if fail_after and turn == fail_after[1]:
                    fail_after[0].down = True
                await pool.chat([{"role": "user", "content": name}], SamplingParams())

    await asyncio.gather(*(session(n) for n in names))


def test_sessions_spread_by_outstanding_requests_and_stay_on_their_replica():
    a, b = FakeReplica("a"), FakeReplica("b")
    pool = ReplicaPool([a, b])
    asyncio.run(_sessions(pool, [f"s{i}" for i in range(8)], turns=3))
    assert len(a.seen) == len(b.seen) == 12  # 4 sessions x 3 turns each
    assert not set(a.seen) & set(b.seen)  # no session moved
    assert [r.requests for r in pool.records()] == [12, 12]

    async def judge(name: str) -> None:  # a judge's item prompts follow the session's pin too
        with routing_key(name):
            await pool.choice_distribution([{"role": "user", "content": name}], ["0", "1"])

    asyncio.run(judge("s0"))
    assert ("s0" in a.seen) != ("s0" in b.seen) and a.seen.count("s0") + b.seen.count("s0") == 4


def test_a_failed_replica_is_taken_out_and_its_sessions_continue_elsewhere():
    a, b = FakeReplica("a"), FakeReplica("b")
    warnings: list[str] = []
    pool = ReplicaPool([a, b], warn=warnings.append)
    asyncio.run(_sessions(pool, [f"s{i}" for i in range(6)], turns=4, fail_after=(b, 2)))
    from collections import Counter

    assert Counter(a.seen + b.seen) == {f"s{i}": 4 for i in range(6)}  # every turn of every session answered once
    assert len(warnings) == 1 and warnings[0].startswith("replica b of m stopped answering")
    records = pool.records()
    assert records[0].failure is None and records[1].failure and "b is down" in records[1].failure


def test_no_replica_left_stops_the_run():
    a, b = FakeReplica("a"), FakeReplica("b")
    a.down = b.down = True
    pool = ReplicaPool([a, b])
    with pytest.raises(BackendUnavailable, match="all 2 replicas"):
        asyncio.run(_sessions(pool, ["s0"], turns=1))


@pytest.mark.vllm
def test_two_vllm_servers_one_killed_mid_run(vllm_endpoint, tiny_model, tmp_path):
    """Every session recorded once although one of the two replicas died while sessions were running."""
    from evalkit.backends.vllm_server import ManagedVLLMServer

    doomed = ManagedVLLMServer(str(tiny_model), served_name="tiny", max_model_len=int(TINY_MAX_MODEL_LEN),
                               extra_args=TINY_VLLM_ARGS.split(), log_path=tmp_path / "doomed.log")
    doomed.start()
    out = tmp_path / "run"
    sessions = 24
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "evalkit", "run", "--endpoint", vllm_endpoint, "--endpoint", doomed.url,
             "--suite", "tes", "--sessions", str(sessions), "--turns", "4", "--max-tokens", "48",
             "--concurrency", "8", "--out", str(out), "--quiet", "--judge-min-mass", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})
        transcripts = out / "transcripts.jsonl"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if transcripts.exists() and len(transcripts.read_text().splitlines()) >= 2:
                break
            time.sleep(0.02)
        done_at_kill = len(transcripts.read_text().splitlines())
        assert proc.poll() is None and done_at_kill < sessions, "the run ended before the replica could be killed"
        os.killpg(doomed.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        output, _ = proc.communicate(timeout=600)
    finally:
        doomed.stop()
    assert proc.returncode == 0, output
    assert "stopped answering and is out of this run" in output, output
    ids = [json.loads(line)["session_id"] for line in transcripts.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == sessions
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["counts"]["sessions_scored"] == sessions
    assert manifest["config"]["roles"]["therapist"] == "openai:replicas:tiny"
    survivor, dead = manifest["roles"]["therapist"]["replicas"]
    assert survivor["failure"] is None and dead["failure"], manifest["roles"]["therapist"]
    assert survivor["requests"] > 0 and dead["requests"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sessions"] == sessions
