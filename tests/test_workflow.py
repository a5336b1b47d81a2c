"""The user's workflow around a run: join-ready tables, config files, several checkpoints in one command, self-judging
detected by identity, tracking to MLflow and W&B, --version. All with the scripted mock backend."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import evalkit

from .conftest import read_jsonl, run_cli

MOCK_ROLES = ["--client-model", "client", "--client-backend", "mock", "--judge-model", "judge", "--judge-backend", "mock"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name in ("sft", "orpo"):
        result = run_cli("run", "--model", name, "--backend", "mock", *MOCK_ROLES, "--suite", "tes", "--turns", "2",
                         "--sessions", "4", "--out", root / name, "-q", "--include-flagged")
        assert result.code == 0, result.output
    return root / "sft", root / "orpo"


def test_scores_parquet_and_load_runs_are_join_ready(two_runs):
    columns = {"run", "model", "suite", "persona", "archetype", "risk_type", "replicate", "rubric", "item", "kind", "score", "valid"}
    frame = pd.read_parquet(two_runs[0] / "scores.parquet")
    assert columns <= set(frame.columns) and len(frame) > 0
    assert (frame["run"] == "sft").all() and (frame["model"] == "sft").all()
    items = frame[(frame["rubric"] == "tes") & (frame["kind"] == "item")]
    jsonl = [r for r in read_jsonl(two_runs[0] / "scores.jsonl") if r["rubric"] == "tes"]
    assert sorted(items["score"].round(12)) == sorted(round(r["expected"], 12) for r in jsonl)
    totals = frame[(frame["rubric"] == "tes") & (frame["item"] == "total")]
    assert len(totals) == 4 and totals["kind"].eq("composite").all()  # per-session composites, one per session
    tables = evalkit.load_runs(*two_runs)
    assert columns <= set(tables.scores.columns) and set(tables.scores["run"]) == {"sft", "orpo"}
    assert set(tables.sessions["run"]) == {"sft", "orpo"} and "tes.total" in tables.sessions.columns
    summary = json.loads((two_runs[1] / "summary.json").read_text())["rubrics"]["tes"]["composites"]["total"]
    row = tables.summary[(tables.summary["run"] == "orpo") & (tables.summary["item"] == "total")].iloc[0]
    assert row["mean"] == pytest.approx(summary["mean"]) and row["better"] == "higher"


def test_a_config_file_sets_everything_and_flags_override_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("suite: psychocounsel\nsessions: 3\ntherapist: {model: from-config, backend: mock}\n"
                      "judge: {model: judge, backend: mock}\nseed: 7\n")
    result = run_cli("run", "--config", config, "--sessions", "2", "--out", tmp_path / "run", "-q")
    assert result.code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["sessions_requested"] == 2 and manifest["config"]["seed"] == 7  # flag beat the file; the rest came from it
    assert manifest["roles"]["therapist"]["model"] == "from-config"
    config.write_text("suite: psychocounsel\nsesions: 3\n")
    bad = run_cli("run", "--config", config, "--model", "m", "--backend", "mock", "--out", tmp_path / "bad")
    assert bad.code == 2 and "sesions" in bad.output and str(config) in bad.output and not (tmp_path / "bad").exists()


def test_several_checkpoints_in_one_command_then_compared(tmp_path):
    result = run_cli("run", "--model", "ckpt-a", "--model", "ckpt-b", "--backend", "mock", *MOCK_ROLES, "--suite",
                     "psychocounsel", "--sessions", "3", "--out", tmp_path / "runs", "--compare", "-q")
    assert result.code == 0, result.output
    for name in ("ckpt-a", "ckpt-b"):
        assert json.loads((tmp_path / "runs" / name / "manifest.json").read_text())["roles"]["therapist"]["model"] == name
    assert "comparison:" in result.output


def test_self_judging_is_detected_by_identity_not_by_omitted_flags(tmp_path):
    result = run_cli("run", "--model", "same", "--backend", "mock", "--judge-model", "same", "--judge-backend", "mock",
                     "--suite", "psychocounsel", "--sessions", "2", "--out", tmp_path / "run", "-q")
    assert result.code == 0 and "self-judged" in result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["self_judged"] and not manifest["roles"]["judge"]["defaulted_to_therapist"]


def test_endpoints_are_one_server_however_they_are_spelled():
    from evalkit.backends.roles import normalise_endpoint

    spellings = ["http://localhost:8000", "http://127.0.0.1:8000/v1", "HTTP://LOCALHOST:8000/v1/", "http://127.0.0.1:8000/"]
    assert len({normalise_endpoint(s) for s in spellings}) == 1
    assert normalise_endpoint("http://127.0.0.1:8001") != normalise_endpoint("http://127.0.0.1:8000")


def test_version():
    result = run_cli("--version")
    assert result.code == 0 and result.stdout.strip() == f"evalkit {evalkit.__version__}"


def test_tracking_to_mlflow_file_store_and_wandb_offline(two_runs, tmp_path, monkeypatch):
    import mlflow

    store = f"file:{tmp_path / 'mlruns'}"
    result = run_cli("track", two_runs[0], "--mlflow", store)
    assert result.code == 0, result.output
    mlflow.set_tracking_uri(store)
    (logged,) = mlflow.search_runs(experiment_names=["evalkit"], output_format="list")
    summary = json.loads((two_runs[0] / "summary.json").read_text())["rubrics"]["tes"]["composites"]["total"]
    assert logged.data.metrics["tes.total"] == pytest.approx(summary["mean"])
    assert logged.data.params["suite"] == "tes" and logged.data.params["model_name.therapist"] == "sft"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(logged.info.run_id)}
    assert {"manifest.json", "summary.json", "scores.parquet"} <= artifacts

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    result = run_cli("track", two_runs[1], "--wandb", "evalkit-tests", env={"WANDB_MODE": "offline"})
    assert result.code == 0, result.output
    offline = list((two_runs[1] / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].rglob("*.wandb"))
