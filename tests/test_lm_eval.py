"""evalkit's tasks inside lm-eval-harness, against vLLM's CPU build serving the tiny model.

The judge for evalkit_counsel_response is the same server, reached through EVALKIT_JUDGE_ENDPOINT.
Everything runs from an unrelated working directory, with a handful of documents (--limit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from evalkit.core.resources import lm_eval_tasks_dir

PRINCIPLES = ["empathy", "relevance", "clarity", "safety", "exploration", "autonomy", "staging"]


def lm_eval(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lm_eval", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900, env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **(env or {})})


def test_preference_pairs_cover_every_principle_with_similar_lengths():
    import importlib.util
    from collections import Counter

    spec = importlib.util.spec_from_file_location("evalkit_lm_eval_utils", lm_eval_tasks_dir() / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    pairs = utils.load_pairs().pairs
    counts = Counter(p.breaks for p in pairs)
    assert len(pairs) >= 100 and len(counts) >= 8 and min(counts.values()) >= 12
    for pair in pairs:  # length must not give the answer away
        a, b = len(pair.preferred.split()), len(pair.dispreferred.split())
        assert abs(a - b) <= 0.25 * max(a, b), pair.id
    from evalkit.content.personas import load_utterances

    assert len(load_utterances()) >= 200


def test_the_response_task_checks_its_judge_before_generating(monkeypatch):
    """Loading the task's data (which lm-eval does before any generation) fails at once without a reachable judge."""
    import importlib.util

    from evalkit.backends.vllm_server import free_port
    from evalkit.core.errors import BackendUnavailable

    spec = importlib.util.spec_from_file_location("evalkit_lm_eval_utils", lm_eval_tasks_dir() / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    monkeypatch.delenv("EVALKIT_JUDGE_ENDPOINT", raising=False)
    with pytest.raises(RuntimeError, match="EVALKIT_JUDGE_ENDPOINT"):
        utils.counsel_utterances()
    monkeypatch.setenv("EVALKIT_JUDGE_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BackendUnavailable, match="cannot reach endpoint"):
        utils.counsel_utterances()


def test_lm_eval_path_points_at_the_tasks():
    from .conftest import run_cli

    result = run_cli("lm-eval-path")
    assert result.code == 0 and result.stdout.strip() == str(lm_eval_tasks_dir())
    assert (lm_eval_tasks_dir() / "evalkit_counsel_response.yaml").exists()


@pytest.mark.vllm
def test_counsel_response_through_the_lm_eval_cli(vllm_endpoint, tmp_path):
    out = tmp_path / "out"
    result = lm_eval(
        "--model", "local-chat-completions",
        "--model_args", f"model=tiny,base_url={vllm_endpoint}/v1/chat/completions,num_concurrent=4,max_retries=1",
        "--apply_chat_template", "--tasks", "evalkit_counsel_response", "--include_path", str(lm_eval_tasks_dir()),
        "--limit", "4", "--gen_kwargs", "max_gen_toks=16", "--output_path", str(out),
        cwd=tmp_path, env={"EVALKIT_JUDGE_ENDPOINT": vllm_endpoint, "EVALKIT_JUDGE_MIN_MASS": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for metric in [*PRINCIPLES, "unscored"]:
        assert f"|{metric}" in table.replace(" ", ""), table
    [results_file] = list(out.rglob("results_*.json"))
    scores = json.loads(results_file.read_text())["results"]["evalkit_counsel_response"]
    for principle in PRINCIPLES:
        assert 1 <= scores[f"{principle},none"] <= 5
    assert scores["unscored,none"] == 0


@pytest.mark.vllm
def test_counsel_pref_through_the_lm_eval_cli(vllm_endpoint, tiny_model, tmp_path):
    result = lm_eval(
        "--model", "local-completions",
        "--model_args", f"model=tiny,base_url={vllm_endpoint}/v1/completions,tokenizer={tiny_model},num_concurrent=4,max_retries=1",
        "--tasks", "evalkit_counsel_pref", "--include_path", str(lm_eval_tasks_dir()), "--limit", "6", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "evalkit_counsel_pref" in result.stdout and "acc" in result.stdout


@pytest.mark.vllm
def test_tasks_through_the_python_api(vllm_endpoint, tiny_model, tmp_path, monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(tmp_path)
    manager = TaskManager(include_path=str(lm_eval_tasks_dir()))
    assert {"evalkit", "evalkit_counsel_response", "evalkit_counsel_pref"} <= set(manager.all_tasks)
    results = simple_evaluate(
        model="local-completions",
        model_args=f"model=tiny,base_url={vllm_endpoint}/v1/completions,tokenizer={tiny_model},num_concurrent=4,max_retries=1",
        tasks=["evalkit_counsel_pref"], task_manager=manager, limit=6)
    accuracy = results["results"]["evalkit_counsel_pref"]["acc,none"]
    assert 0 <= accuracy <= 1

    # PsychoCounsel-Preference from a local file in its published columns, passed as task metadata.
    import pandas as pd

    path = tmp_path / "pcp.parquet"
    pd.DataFrame([{"question": f"I can't sleep before exams ({i}).", "chosen": "What happens in your mind at night?",
                   "rejected": "Just take a pill.", "chosen_model": "a", "rejected_model": "b"} for i in range(3)]).to_parquet(path)
    manager = TaskManager(include_path=str(lm_eval_tasks_dir()), metadata={"psychocounsel_preference": str(path)})
    results = simple_evaluate(
        model="local-completions",
        model_args=f"model=tiny,base_url={vllm_endpoint}/v1/completions,tokenizer={tiny_model},num_concurrent=4,max_retries=1",
        tasks=["evalkit_counsel_pref_psychocounsel"], task_manager=manager)
    assert results["n-samples"]["evalkit_counsel_pref_psychocounsel"]["effective"] == 3
