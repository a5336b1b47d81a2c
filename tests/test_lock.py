"""One writer per run directory, tested with real processes: a second `evalkit run` on the same directory is
refused in one line naming the holder, a lock left by a killed process is taken over, and the directory ends with
every session and score exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from .conftest import CliResult, assert_one_line_error, read_jsonl, run_cli, run_cli_subprocess
from .faulty_server import FaultyServer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def slow_server():
    """A stand-in whose therapist replies take a while, so a run is still writing when a second one starts."""
    server = FaultyServer().start()

    def slow(body: dict) -> str:
        time.sleep(1.5)
        return "That sounds hard. What matters most to you here?"

    server.replies["therapist"] = slow
    yield server
    server.stop()


def _args(server: FaultyServer, out: Path) -> list[str]:
    return ["run", "--endpoint", server.url, "--model", "therapist", "--judge-endpoint", server.url, "--judge-model", "judge",
            "--suite", "psychocounsel", "--sessions", "6", "--concurrency", "1", "-q", "--out", str(out)]


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evalkit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "COLUMNS": "200"}, start_new_session=True)


def _holding(out: Path, proc: subprocess.Popen, within: float = 60) -> dict:
    """Wait until `proc` holds the run's lock and has begun writing sessions; return the holder record."""
    lock = out / ".evalkit.lock"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text() and (out / "transcripts.jsonl").exists():
            record = json.loads(lock.read_text())
            if record["pid"] == proc.pid:
                return record
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


def _every_row_once(out: Path) -> None:
    sessions = Counter(t["session_id"] for t in read_jsonl(out / "transcripts.jsonl"))
    assert len(sessions) == 6 and max(sessions.values()) == 1, sessions
    keys = Counter((r["session_id"], r["rubric"], r["item"]) for r in read_jsonl(out / "scores.jsonl"))
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1][:3]


def test_a_second_writer_is_refused_naming_the_holder_and_nothing_is_duplicated(slow_server, tmp_path):
    out = tmp_path / "run"
    first = _start(_args(slow_server, out))
    record = _holding(out, first)
    second = run_cli_subprocess(*_args(slow_server, out))
    assert_one_line_error(second, "another evalkit process is writing this run", f"pid {record['pid']}", record["host"])
    assert first.wait(timeout=240) == 0, first.communicate()
    _every_row_once(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["sessions"] == 6
    again = run_cli_subprocess(*_args(slow_server, out))  # the lock was released: the same command now resumes (nothing left)
    assert again.code == 0, again.output
    _every_row_once(out)


def test_a_lock_left_by_a_killed_process_is_taken_over(slow_server, tmp_path):
    out = tmp_path / "run"
    first = _start(_args(slow_server, out))
    _holding(out, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert json.loads((out / ".evalkit.lock").read_text())["pid"] == first.pid  # its record is still there, stale
    second = run_cli_subprocess(*_args(slow_server, out))
    assert second.code == 0, second.output
    _every_row_once(out)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_rescore_takes_the_same_lock(slow_server, tmp_path):
    slow_server.replies.clear()  # this one needs no slow run
    source = tmp_path / "source"
    assert run_cli_subprocess(*_args(slow_server, source)).code == 0
    out = tmp_path / "rescored"
    from evalkit.store.lock import RunLock

    with RunLock(out).acquire(["holder", "for", "the", "test"]):
        refused = run_cli_subprocess("rescore", source, "--out", out, "--judge-endpoint", slow_server.url,
                                     "--judge-model", "judge", "-q")
    assert_one_line_error(refused, "another evalkit process is writing this run", f"pid {os.getpid()}", "holder for the test")
    done = run_cli_subprocess("rescore", source, "--out", out, "--judge-endpoint", slow_server.url, "--judge-model", "judge", "-q")
    assert done.code == 0, done.output
    assert Counter(t["session_id"] for t in read_jsonl(out / "transcripts.jsonl")) == Counter(
        t["session_id"] for t in read_jsonl(source / "transcripts.jsonl"))


def test_two_different_configurations_started_together_into_one_out_one_is_refused(tmp_path):
    """The audit's case: two commands with different models into one --out, started at once, both exited 0 and the
    manifest named the wrong model for most sessions. Now the writer lock (or, once the first has finished, the
    configuration check) refuses one in one line, and every session in the directory is the other's."""
    server = FaultyServer().start()
    server.models = ["therapist", "therapist-b", "client", "judge"]
    replies = {"therapist": "I am therapist A. What brings you here?", "therapist-b": "I am therapist B. Tell me more."}
    for name, text in replies.items():
        server.replies[name] = lambda body, text=text: (time.sleep(0.3), text)[1]
    out = tmp_path / "run"
    try:
        procs = {}
        for name in replies:
            args = _args(server, out)
            args[args.index("therapist")] = name
            procs[name] = _start([*args[:args.index("--sessions") + 1], "4", *args[args.index("--sessions") + 2:]])
        results = {name: (p.wait(timeout=240), *p.communicate()) for name, p in procs.items()}
    finally:
        server.stop()
    winners = [name for name, (code, _, _) in results.items() if code == 0]
    assert len(winners) == 1, {n: (c, e[-500:]) for n, (c, _, e) in results.items()}
    loser = next(n for n in results if n not in winners)
    code, stdout, stderr = results[loser]
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, lines
    assert "another evalkit process is writing this run" in lines[0] or "different configuration" in lines[0], lines[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["roles"]["therapist"]["model"] == winners[0] and manifest["status"] == "complete"
    transcripts = read_jsonl(out / "transcripts.jsonl")
    assert len(transcripts) == 4 == len({t["session_id"] for t in transcripts})
    said = {turn["content"] for t in transcripts for turn in t["turns"] if turn["role"] == "therapist"}
    assert said == {replies[winners[0]]}, said


def test_two_rescores_started_together_write_every_row_once(tmp_path):
    server = FaultyServer().start()
    try:
        source = tmp_path / "source"
        assert run_cli(*_args(server, source)).code == 0  # in this process: only the two rescores need their own
        server.judge_answer = lambda body, choices: (time.sleep(0.02), {c: 1.0 for c in choices})[1]  # a judge that takes a while
        out = tmp_path / "rescored"
        args = ["rescore", str(source), "--out", str(out), "--judge-endpoint", server.url, "--judge-model", "judge", "-q"]
        procs = [_start(args) for _ in range(2)]
        results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    finally:
        server.stop()
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 2]), [(c, e[-300:]) for c, _, e in results]
    for code, stdout, stderr in results:
        if code == 2:
            assert_one_line_error(CliResult(code, stdout, stderr), "another evalkit process is writing this run")
    source_keys = Counter((r["session_id"], r["rubric"], r["item"]) for r in read_jsonl(source / "scores.jsonl"))
    rescored = Counter((r["session_id"], r["rubric"], r["item"]) for r in read_jsonl(out / "scores.jsonl"))
    assert rescored == source_keys and set(rescored.values()) == {1}
    assert len(read_jsonl(out / "transcripts.jsonl")) == 6
