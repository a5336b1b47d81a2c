"""A user's first hour, as typed: one run's choices honoured by every later command, reasons for invalid scores
printed, a config file in the flags' own spellings, progress a CI log can show, listings a pipe can read."""

from __future__ import annotations

import json

from .conftest import run_cli
from .faulty_server import _faulty_server_module, faulty_server  # noqa: F401 - pytest fixtures, used by name

MOCK = ["--model", "m", "--backend", "mock", "--client-model", "c", "--client-backend", "mock",
        "--judge-model", "j", "--judge-backend", "mock"]


def _tes(tmp_path, name: str, *extra: str) -> tuple:
    out = tmp_path / name
    result = run_cli("run", *MOCK, "--suite", "tes", "--sessions", "3", "--turns", "3", "--out", out, *extra)
    return result, out


def test_include_flagged_given_to_run_is_honoured_by_every_later_command(tmp_path):
    """The mock judge guesses, so every simulated client is flagged: without the flag nothing is left to analyse, with
    it (given once, to run) gate, compare, plan and rescore all see the sessions, and say what they left out."""
    base, base_dir = _tes(tmp_path, "base", "--include-flagged")
    cand, cand_dir = _tes(tmp_path, "cand", "--include-flagged")
    assert base.code == cand.code == 0, base.output
    manifest = json.loads((base_dir / "manifest.json").read_text())
    assert manifest["inclusion"]["include_flagged"] is True
    summary = json.loads((base_dir / "summary.json").read_text())
    assert summary["sessions_analysed"] == 3 and summary["rubrics"]["tes"]["composites"]["total"]["mean"] is not None
    gate = run_cli("gate", "--baseline", base_dir, "--candidate", cand_dir, "--metric", "tes.total", "--margin", "1")
    assert "not a metric" not in gate.output and gate.code in (0, 1, 2), gate.output
    assert json.loads((cand_dir / "gate.json").read_text())["metrics"]["tes.total"]["sessions"] == 3
    compared = run_cli("compare", base_dir, cand_dir, "--out", tmp_path / "cmp")
    assert compared.code == 0, compared.output
    assert "Primary metrics" in compared.stdout and "tes.total" in compared.stdout  # results on stdout
    assert "comparison: " in compared.stderr and "comparison: " not in compared.stdout  # where they went, on stderr
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["include_flagged"] is True
    rescored = run_cli("rescore", base_dir, "--judge-model", "j2", "--judge-backend", "mock", "--out", tmp_path / "re", "-q")
    assert rescored.code == 0, rescored.output
    assert json.loads((tmp_path / "re" / "summary.json").read_text())["sessions_analysed"] == 3
    # Overridden by a later command's flag, and the exclusion is named where it empties a metric.
    left_out = run_cli("gate", "--baseline", base_dir, "--candidate", cand_dir, "--metric", "tes.total", "--margin", "1",
                       "--exclude-flagged", "--out", tmp_path / "g2")
    assert "flagged" in left_out.output and "--include-flagged" in left_out.output, left_out.output


def test_run_then_compare_in_one_command_keeps_the_choice(tmp_path):
    result = run_cli("run", "--model", "a", "--model", "b", "--backend", "mock", "--judge-model", "j", "--judge-backend", "mock",
                     "--client-model", "c", "--client-backend", "mock", "--suite", "tes", "--sessions", "2", "--turns", "2",
                     "--include-flagged", "--compare", "--out", tmp_path / "runs", "-q")
    assert result.code == 0, result.output
    assert "include_flagged" not in result.output


def test_why_scores_were_invalid_is_printed_with_what_changes_it(faulty_server, tmp_path):  # noqa: F811
    """A judge that puts 20% of its probability on the score tokens: every reading is invalid, and the terminal says
    why (the reason kind, counted) and which flags change it, for run and for rescore alike."""
    faulty_server.judge_mass = 0.2
    judge = ["--judge-endpoint", faulty_server.url, "--judge-model", "judge"]
    ran = run_cli("run", "--model", "m", "--backend", "mock", *judge, "--suite", "psychocounsel", "--sessions", "2",
                  "--out", tmp_path / "run")
    assert ran.code == 0, ran.output
    said = ran.output.replace("\n", " ")
    assert "invalid score rows: 14" in said and "14× the allowed answers carried only" in said, ran.output
    assert "--rejudge-invalid" in said and "--judge-min-mass" in said
    rescored = run_cli("rescore", tmp_path / "run", *judge, "--out", tmp_path / "rescored")
    assert rescored.code == 0 and "14× the allowed answers carried only" in rescored.output.replace("\n", " "), rescored.output


def test_a_config_file_in_the_flags_spellings_round_trips_through_print_config(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("suite: tes\nmodel: m\nbackend: mock\njudge-model: j\njudge-backend: mock\nsessions: 4\n"
                      "no-adherence: true\ntimeout: [judge:deadline=30]\nvllm-args: --dtype float32\n")
    printed = run_cli("run", "--config", config, "--print-config", "--turns", "2")
    assert printed.code == 0, printed.output
    text = printed.stdout
    assert "turns: 2" in text and "adherence: false" in text and "timeout_deadline: 30.0" in text and "- --dtype" in text
    again = tmp_path / "again.yaml"
    again.write_text(text)
    assert run_cli("run", "--config", again, "--print-config").stdout == text
    bad = tmp_path / "bad.yaml"
    bad.write_text("suite: tes\nmodel: m\njudge-modle: j\n")
    refused = run_cli("run", "--config", bad)
    assert refused.code == 2 and "judge_modle" in refused.output and len(refused.lines) == 1, refused.output


def test_progress_in_a_ci_log_is_plain_lines_with_counts(tmp_path):
    result = run_cli("run", *MOCK, "--suite", "psychocounsel", "--sessions", "4", "--out", tmp_path / "run",
                     env={"EVALKIT_PROGRESS_SECONDS": "0"})
    assert result.code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress: ")]
    assert lines and "sessions 4/4" in lines[-1] and "scoring" in lines[-1] and "elapsed" in lines[-1], result.stderr


def test_tables_go_to_stdout_and_messages_to_stderr(tmp_path):
    ran, out = _tes(tmp_path, "run", "--include-flagged")
    assert "mean and 95% CI clustered by persona" in ran.stdout and "clustered by persona" not in ran.stderr
    assert "warning: the judge has not been checked on evalkit's vignettes" in ran.stderr.replace("\n", " ")
    assert "results: " in ran.stderr and "tokens in the transcripts: therapist" in ran.stdout.replace("\n", " ")
    transcripts = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    turns = [t for s in transcripts for t in s["turns"] if t["role"] == "therapist"]
    prompt, generated = sum(t["prompt_tokens"] or 0 for t in turns), sum(t["completion_tokens"] or 0 for t in turns)
    assert generated and f"therapist {prompt:,} prompt, {generated:,} generated" in ran.stdout.replace("\n", " ")
    empty, _ = _tes(tmp_path, "flagged-left-out")
    said = empty.stdout.replace("\n", " ")
    assert "tes: no score in these sessions" in said and "3 flagged session(s)" in said, said
    assert "safety: no score in these sessions (it rates risk personas' sessions only)" in said
    assert "│" not in empty.stdout  # no table of dashes
    listed = run_cli("runs", tmp_path / "run")
    assert listed.code == 0 and listed.stderr == ""
    (row,) = listed.stdout.strip().splitlines()
    assert row.split("\t")[:4] == [str(out), "tes", "m", "complete"]
    personas = run_cli("personas")
    assert "hopeless-skeptic" in personas.stdout and personas.stderr == ""
    assert run_cli("run", "-h").code == 0


def test_a_directory_holding_more_sessions_than_asked_says_so(tmp_path):
    _, out = _tes(tmp_path, "run")
    fewer = run_cli("run", *MOCK, "--suite", "tes", "--sessions", "2", "--turns", "3", "--out", out)
    assert fewer.code == 0 and "already holds 3 sessions and 2 were asked for" in fewer.output.replace("\n", " "), fewer.output
