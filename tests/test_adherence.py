"""Persona adherence flags any one kind of failure, judges disclosures by meaning, lays out its prompts for the prefix
cache, and never counts an unreadable session as checked. Checked on the prompts the judge was actually sent."""

from __future__ import annotations

from evalkit.backends.mock import MockBackend
from evalkit.content.suites import load_suite
from evalkit.judging.adherence import CHECKS, TURN_CHECKS, check_of, session_adherence
from evalkit.judging.prompts import CLOSE
from evalkit.store.records import ItemScore


def _judge_failing(check: str | None):
    """A judge that fails one kind of persona check every time and passes everything else."""
    def answer(messages, choices):
        question = messages[-1]["content"].split(CLOSE, 1)[-1]
        if choices == ["0", "1"]:
            failing = check is not None and (TURN_CHECKS.get(check, "\0") in question or f"{check}." in question
                                             or (check == "disclosed" and "held it back" in question)
                                             or (check == "voiced" and "was due in client turn" in question))
            return {"0": 1.0} if failing else {"1": 1.0}
        return {c: 1.0 for c in choices}
    return answer


def _suite(tmp_path, persona="depression-warehouse-supervisor"):
    suite = tmp_path / "one.yaml"
    suite.write_text(load_suite("tes").path.read_text().replace("personas: all", f"personas: [{persona}]"))
    return str(suite)


def _rows(values: dict[str, float | None]) -> list[ItemScore]:
    return [ItemScore(session_id="s", source_id="p", rubric="persona-adherence", rubric_version="3", item=k,
                      valid=v is not None, expected=v, reason=None if v is not None else "planted", judge="j")
            for k, v in values.items()]


def test_one_kind_of_check_failing_at_every_turn_flags_the_session():
    # Over-disclosure at every one of five turns, every other check passing: the pooled rate would be 0.83 (> 0.8).
    rows = _rows({f"t{t}.{c}": (0.0 if c == "disclosure_pace" else 1.0) for t in (2, 4, 6, 8, 10) for c in TURN_CHECKS})
    view = session_adherence(rows, 0.8)
    assert view.flagged and view.failing == ("disclosure_pace",)
    assert view.per_check["disclosure_pace"] == 0.0 and view.per_check["style"] == 1.0
    # One slip in five turns is not systematic.
    rows = _rows({f"t{t}.{c}": (0.0 if (c == "style" and t == 2) else 1.0) for t in (2, 4, 6, 8, 10) for c in TURN_CHECKS})
    assert not session_adherence(rows, 0.8).flagged
    assert check_of("t12.no_therapist_speak") == "no_therapist_speak" and check_of("disclosed.plan-and-timing") == "disclosed"


def test_every_kind_of_check_can_flag_a_run_and_the_summary_says_which(tmp_path):
    import evalkit

    for check in CHECKS:
        result = evalkit.run(MockBackend(model="t"), _suite(tmp_path), client=MockBackend(model="c"),
                             judge=MockBackend(model="j", distribution=_judge_failing(check)), turns=6,
                             out=tmp_path / check, report=False)
        adherence = result.summary.adherence
        assert adherence.flagged and adherence.flagged_by_check == {check: 1}, (check, adherence.flagged_by_check)
        assert adherence.per_check[check] == 0.0 and result.summary.excluded == {"flagged": 1}, check
    passing = evalkit.run(MockBackend(model="t"), _suite(tmp_path), client=MockBackend(model="c"),
                          judge=MockBackend(model="j", distribution=_judge_failing(None)), turns=6, out=tmp_path / "none",
                          report=False)
    assert passing.summary.adherence.flagged == [] and passing.summary.sessions_analysed == 1


def test_disclosure_questions_go_by_meaning_and_prompts_share_their_prefix(tmp_path):
    import evalkit

    judge = MockBackend(model="j", distribution=_judge_failing(None))
    evalkit.run(MockBackend(model="t", replies=["Tell me about that, in your own words."]), _suite(tmp_path),
                client=MockBackend(model="c"), judge=judge, turns=6, out=tmp_path / "run", report=False)
    asked = [c.messages for c in judge.calls if c.kind == "choice" and "plays its persona" in c.messages[0]["content"]]
    questions = [m[-1]["content"].split(CLOSE, 1)[1] for m in asked]
    # Under-disclosure and risk voicing are asked for by meaning, whatever words the counsellor used.
    assert any("asked about or clearly invited this topic (in any words)" in q for q in questions)
    assert sum("was due in client turn" in q for q in questions) == 2  # its two risk disclosures, due after replies 2 and 3
    # Everything up to the end of the transcript is identical across the session's readings; only the question varies.
    prefixes = {m[-1]["content"].split(CLOSE, 1)[0] for m in asked}
    assert len(prefixes) == 1 and len(asked) > 20


def test_a_session_whose_checks_are_all_unreadable_is_unchecked_not_checked(tmp_path):
    import evalkit

    result = evalkit.run(MockBackend(model="t"), _suite(tmp_path), client=MockBackend(model="c"),
                         judge=MockBackend(model="j", mass=0.1), turns=4, out=tmp_path / "run", report=False)
    adherence = result.summary.adherence
    assert adherence.sessions_checked == 0 and adherence.sessions_unchecked == 1 and adherence.unchecked
    assert adherence.invalid_checks > 0 and not adherence.flagged
    tables = evalkit.load_runs(result.directory)
    assert tables.sessions["adherence_checked"].tolist() == [False]
