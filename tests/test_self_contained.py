"""A stored run carries what it needs to be read again: a suite of the user's own, with its own rubric and persona
folder, runs; the suite files are deleted; compare, gate, report, rescore and a replay of that run still work from
another working directory."""

import json
import shutil

from evalkit.content.suites import load_suite
from evalkit.core.resources import rubrics_dir, simulators_dir

from .conftest import read_jsonl, run_cli

MOCK = ["--backend", "mock", "--client-model", "client", "--client-backend", "mock", "--judge-model", "judge",
        "--judge-backend", "mock", "-q", "--include-flagged"]


def _own_suite(root):
    """A suite directory with a renamed copy of the TES rubric and three personas of the user's own."""
    suite_dir = root / "my-suite"
    (suite_dir / "people").mkdir(parents=True)
    rubric = (rubrics_dir() / "tes.yaml").read_text().replace("id: tes", "id: my-empathy", 1)
    (suite_dir / "my-empathy.yaml").write_text(rubric)
    for path in sorted((simulators_dir() / "personas").glob("*.yaml"))[:3]:
        shutil.copy(path, suite_dir / "people" / path.name)
    suite = load_suite("tes").path.read_text()
    suite = suite.replace("id: tes", "id: my-tes").replace("rubrics: [tes, {rubric: safety, applies_to: risk}]",
                                                           "rubrics: [my-empathy.yaml]")
    suite += "\npersona_dir: people\ngate:\n  metrics: {my-empathy.total: 0.5}\n"
    (suite_dir / "my-tes.yaml").write_text(suite)
    return suite_dir


def test_a_run_of_a_users_own_suite_is_read_again_after_the_suite_is_deleted(tmp_path):
    suite_dir = _own_suite(tmp_path)
    runs = tmp_path / "runs"
    for name in ("base", "cand"):
        result = run_cli("run", "--model", name, *MOCK, "--suite", suite_dir / "my-tes.yaml", "--turns", "2",
                         "--out", runs / name)
        assert result.code == 0, result.output
    shutil.rmtree(suite_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # The mock client is always flagged; a mock run keeps flagged sessions unless told otherwise, and records it.
    left_out = run_cli("compare", runs / "base", runs / "cand", "--out", tmp_path / "cmp", "--exclude-flagged", cwd=elsewhere)
    assert left_out.code == 2 and "flagged" in left_out.output  # never an empty comparison
    compared = run_cli("compare", runs / "base", runs / "cand", "--out", tmp_path / "cmp", "--bootstrap", "0", cwd=elsewhere)
    assert compared.code == 0, compared.output
    assert "my-empathy.total" in json.loads((tmp_path / "cmp" / "comparison.json").read_text())["metrics"]

    gated = run_cli("gate", "--baseline", runs / "base", "--candidate", runs / "cand", cwd=elsewhere)
    gate = json.loads((runs / "cand" / "gate.json").read_text())
    assert gated.code in (0, 1, 2) and "my-empathy.total" in gate["metrics"], gated.output  # the suite's own gate block

    reported = run_cli("report", runs / "base", cwd=elsewhere)
    assert reported.code == 0 and "my-empathy" in (runs / "base" / "report.html").read_text()

    # A stored run is itself a suite: the exact suite it used, to replay its clients against another model.
    replayed = run_cli("run", "--model", "base", *MOCK, "--suite", runs / "base", "--turns", "2",
                       "--replay-client", runs / "base", "--out", runs / "replay", cwd=elsewhere)
    assert replayed.code == 0, replayed.output
    turns = [t for s in read_jsonl(runs / "replay" / "transcripts.jsonl") for t in s["turns"][1:] if t["role"] == "client"]
    assert turns and all(t["client_source"] == "replayed" for t in turns)  # the same mock therapist: identical replies

    rescored = run_cli("rescore", runs / "base", "--out", tmp_path / "rescored", "--judge-model", "other-judge",
                       "--judge-backend", "mock", "-q", cwd=elsewhere)
    assert rescored.code == 0, rescored.output
    assert read_jsonl(tmp_path / "rescored" / "transcripts.jsonl") == read_jsonl(runs / "base" / "transcripts.jsonl")
    assert {r["rubric"] for r in read_jsonl(tmp_path / "rescored" / "scores.jsonl")} >= {"my-empathy"}
