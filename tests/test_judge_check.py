"""`evalkit judge check`: a judge must show on the shipped vignettes that it can tell clearly high from clearly low
on every item before its numbers count. An oracle that knows what each vignette was written to show passes every
instrument; judges that guess, that put their probability elsewhere, or that rate by overall warmth fail, each
with its reason. Readings go through the scorers and prompts of a real run (prompts actually sent)."""

from __future__ import annotations

import asyncio
import json

import pytest

from evalkit.backends.mock import MockBackend
from evalkit.content.vignettes import available_vignette_sets, load_vignette_set
from evalkit.judging.adherence import TURN_CHECKS
from evalkit.judging.fitness import DEFAULT_SETS, _transcript, check_sets
from evalkit.judging.judge import Judge, JudgeSettings
from evalkit.judging.prompts import CLOSE, render_transcript

from .conftest import run_cli

SETS = {name: load_vignette_set(name) for name in DEFAULT_SETS}


def _oracle(sets, *, invert: str | None = None):
    """A judge that knows each vignette's intended levels: it finds the vignette by its transcript and the item by
    the question, and answers the top (high) or bottom (low) level. `invert`: an item it gets backwards."""
    from evalkit.content.rubrics import load_rubric

    known = []
    for vset in sets:
        names = {} if vset.rubric == "persona-adherence" else {i.id: i.name for i in load_rubric(vset.rubric).items}
        for v in vset.vignettes:
            known.append((render_transcript(_transcript(vset, v)), v, names))

    def answer(messages, choices):
        prompt = messages[-1]["content"]
        question = prompt.split(CLOSE, 1)[-1]
        for rendered, vignette, names in known:
            if rendered not in prompt:
                continue
            for item, level in vignette.levels.items():
                asked = (f"Item: {names[item]}\n" in question if names
                         else TURN_CHECKS[item] in question if item in TURN_CHECKS else f"[{item.split('.', 1)[1]}]" in question)
                if asked:
                    top = (level == "high") != (item == invert)
                    return {choices[-1] if top else choices[0]: 1.0}
        return {c: 1.0 for c in choices}

    return answer


def _check(distribution, sets=None, mass: float = 1.0):
    judge = Judge(MockBackend(model="j", distribution=distribution, mass=mass), JudgeSettings(adherence_threshold=None))
    return asyncio.run(check_sets(judge, list(sets or SETS.values())))


def test_every_instrument_ships_vignettes_for_every_item():
    from evalkit.content.rubrics import load_rubric

    assert set(DEFAULT_SETS) <= set(available_vignette_sets())
    for name in ("act-fm", "tes", "safety"):
        pairs = SETS[name].pairs()
        for item in load_rubric(name).items:
            high, low = pairs.get(item.id, ([], []))
            assert high and low, (name, item.id)
    adherence = SETS["persona-adherence"].pairs()
    assert all(adherence.get(check, ([], []))[0] and adherence.get(check, ([], []))[1] for check in TURN_CHECKS)
    assert any(k.startswith("disclosed.") for k in adherence)


def test_an_oracle_passes_every_instrument():
    report = _check(_oracle(SETS.values()))
    for name, inst in report.items():
        assert inst.verdict == "fit", (name, inst.reasons)
        assert inst.accuracy == 1.0 and inst.invalid == 0, name


def test_a_judge_that_reverses_one_item_is_unfit_and_the_item_is_named():
    report = _check(_oracle(SETS.values(), invert="open_i1"), [SETS["act-fm"]])["act-fm"]
    assert report.verdict == "unfit" and report.items["open_i1"].accuracy == 0.0
    assert any("open_i1" in reason for reason in report.reasons)


def test_a_guessing_judge_is_unfit_with_its_reason():
    report = _check(None)  # MockBackend's hashed distribution: varies by prompt, knows nothing
    for name, inst in report.items():
        assert inst.verdict == "unfit", name
        assert any("pairs correctly" in r or "mean gap" in r or "fewer than half" in r for r in inst.reasons), inst.reasons


def test_a_judge_that_rates_only_overall_warmth_is_unfit():
    """Scores every item by how many warm words the therapist used: the vignettes' minimal pairs defeat it."""
    warm = ("sounds", "hear", "understand", "glad", "really", "makes sense", "thank")

    def halo(messages, choices):
        text = messages[-1]["content"].split(CLOSE)[0].lower()
        score = min(len(choices) - 1, sum(text.count(w) for w in warm) // 3)
        return {choices[score]: 1.0}

    report = _check(halo, [SETS["act-fm"], SETS["tes"]])
    assert all(inst.verdict == "unfit" for inst in report.values()), {n: i.accuracy for n, i in report.items()}


def test_a_judge_that_would_rather_answer_otherwise_is_unfit_for_invalid_readings():
    report = _check(_oracle(SETS.values()), mass=0.2)
    for inst in report.values():
        assert inst.verdict == "unfit" and inst.invalid == inst.readings
        assert any("invalid" in r and "carried only 20.0%" in r for r in inst.reasons), inst.reasons


def test_the_command_writes_its_report_exits_by_verdict_and_a_run_records_it(tmp_path, mocks):
    import evalkit

    out = tmp_path / "check"
    result = run_cli("judge", "check", "--judge-model", "j", "--judge-backend", "mock", "--suite", "tes", "--out", out)
    assert result.code == 1, result.output  # the mock judge guesses
    report = json.loads((out / "judge-check.json").read_text())
    assert report["verdict"] == "unfit" and list(report["instruments"]) == ["tes"]
    assert "not fit" in result.output and "tes: unfit" in result.output
    run = evalkit.run(mocks["therapist"], "psychocounsel", judge=MockBackend(model="j"), sessions=2, out=tmp_path / "run",
                      judge_check=out / "judge-check.json", report=False)
    assert run.manifest.judge_check["verdict"] == "unfit"
    with pytest.raises(evalkit.EvalkitError, match="it checked judge"):
        evalkit.run(mocks["therapist"], "psychocounsel", judge=MockBackend(model="other"), sessions=2, out=tmp_path / "run2",
                    judge_check=out / "judge-check.json", report=False)
    unchecked = evalkit.run(mocks["therapist"], "psychocounsel", judge=MockBackend(model="j"), sessions=2,
                            out=tmp_path / "unchecked", report=False)
    report, _ = evalkit.gate(unchecked.directory, run.directory, report=False)
    assert any(w.startswith("baseline: the judge has not been checked") for w in report.warnings), report.warnings
    assert any(w.startswith("candidate: the judge FAILED its fitness check") and "(tes)" in w
               for w in report.warnings), report.warnings
    same, _ = evalkit.gate(unchecked.directory, unchecked.directory, out=tmp_path / "same", report=False)
    assert [w for w in same.warnings if "judge" in w and "check" in w] == [
        "both runs: the judge has not been checked on evalkit's vignettes (evalkit judge check, then --judge-check)"]
