"""The regression gate on stored runs with known differences."""

import json
import math

import pytest
from junitparser import Error, Failure, JUnitXml
from scipy import stats

from evalkit.statistics.noninferiority import sessions_needed

from .conftest import assert_one_line_error, run_cli
from .synthetic_runs import write_run

PERSONAS = {f"u{i:03d}": e for i, e in enumerate([0.0, 0.4, -0.3, 0.8, -0.6, 0.2, 0.1, -0.2, 0.5, -0.1], start=1)}


def _pair(tmp_path, candidate_effect, **kwargs):
    baseline = write_run(tmp_path / "baseline", effect=0.0, persona_effects=PERSONAS, seed=1, noise=0.3)
    candidate = write_run(tmp_path / "candidate", effect=candidate_effect, persona_effects=PERSONAS, seed=2, noise=0.3,
                          **kwargs)
    return baseline, candidate


def test_same_model_passes(tmp_path):
    baseline, candidate = _pair(tmp_path, 0.0)
    result = run_cli("gate", "--baseline", baseline, "--candidate", candidate)
    assert result.code == 0, result.output
    report = json.loads((candidate / "gate.json").read_text())
    metric = report["metrics"]["psychocounsel.overall"]
    assert report["verdict"] == "pass" and metric["decision"]["n"] == 20 and metric["decision"]["personas"] == 10
    xml = JUnitXml.fromfile(str(candidate / "gate-junit.xml"))
    cases = [case for suite in xml for case in suite]
    assert [c.name for c in cases] == ["psychocounsel.overall"] and all(not c.result for c in cases)
    md = (candidate / "gate.md").read_text()
    assert "| metric | verdict |" in md and "✅ pass" in md


def test_planted_drop_fails_naming_metric_difference_and_bound(tmp_path):
    baseline, candidate = _pair(tmp_path, -0.6)
    result = run_cli("gate", "--baseline", baseline, "--candidate", candidate)
    assert result.code == 1, result.output
    metric = json.loads((candidate / "gate.json").read_text())["metrics"]["psychocounsel.overall"]
    assert metric["verdict"] == "regression" and metric["decision"]["mean_drop"] == pytest.approx(0.6, abs=0.15)
    assert "psychocounsel.overall" in result.output and f"{metric['decision']['upper_bound']:.3f}" in result.output
    assert "mean drop" in result.output
    cases = [case for suite in JUnitXml.fromfile(str(candidate / "gate-junit.xml")) for case in suite]
    assert isinstance(cases[0].result[0], Failure) and "❌ regression" in (candidate / "gate.md").read_text()


def _undecided_files_written(out, *fragments):
    """Every gate outcome writes its files: JSON says undecided with the reason; JUnit has an error case; Markdown says so."""
    report = json.loads((out / "gate.json").read_text())
    assert report["verdict"] == "undecided", report
    for fragment in fragments:
        assert fragment in report["reason"], report["reason"]
    cases = [case for suite in JUnitXml.fromfile(str(out / "gate-junit.xml")) for case in suite]
    assert cases and all(isinstance(c.result[0], Error) for c in cases if c.result)
    assert "cannot decide" in (out / "gate.md").read_text() and (out / "gate-report.html").exists()


def test_incompatible_runs_cannot_be_gated(tmp_path):
    baseline = write_run(tmp_path / "b", effect=0, persona_effects=PERSONAS)
    other_judge = write_run(tmp_path / "c", effect=0, persona_effects=PERSONAS, judge="another-judge")
    assert_one_line_error(run_cli("gate", "--baseline", baseline, "--candidate", other_judge), "different judges")
    _undecided_files_written(other_judge, "different judges")


def test_an_interrupted_candidate_cannot_pass(tmp_path):
    """The review's case: a candidate missing half its personas, manifest 'interrupted', got exit 0 on n = 15."""
    baseline = write_run(tmp_path / "b", effect=0, persona_effects=PERSONAS, seed=1, noise=0.3)
    half = {f"u{i:03d}#{r}" for i in range(6, 11) for r in (0, 1)}
    candidate = write_run(tmp_path / "c", effect=0, persona_effects=PERSONAS, seed=2, noise=0.3, skip=half, status="interrupted")
    assert_one_line_error(run_cli("gate", "--baseline", baseline, "--candidate", candidate), "cannot decide", "interrupted")
    _undecided_files_written(candidate, "interrupted")


def test_a_candidate_missing_sessions_cannot_pass(tmp_path):
    baseline = write_run(tmp_path / "b", effect=0, persona_effects=PERSONAS, seed=1, noise=0.3)
    candidate = write_run(tmp_path / "c", effect=0, persona_effects=PERSONAS, seed=2, noise=0.3, skip={"u001#0", "u002#1"})
    assert_one_line_error(run_cli("gate", "--baseline", baseline, "--candidate", candidate), "18 of the baseline's 20 sessions")
    _undecided_files_written(candidate, "18 of the baseline's 20")
    relaxed = run_cli("gate", "--baseline", baseline, "--candidate", candidate, "--min-shared", "0.9")
    assert relaxed.code == 0, relaxed.output


def test_invalid_scores_are_counted_per_gated_metric(tmp_path):
    """4.9% invalid items overall can still leave a total with few valid sessions: the limit is per metric."""
    planted = {(f"u{i:03d}#{r}", "empathy"): None for i in range(1, 8) for r in (0, 1)}  # 1 of 7 items in 14 of 20 sessions
    baseline, candidate = _pair(tmp_path, 0.0, override=planted)
    rows = [json.loads(line) for line in (candidate / "scores.jsonl").read_text().splitlines()]
    assert sum(not r["valid"] for r in rows) / len(rows) < 0.11  # the item-level rate alone would look tolerable
    result = run_cli("gate", "--baseline", baseline, "--candidate", candidate)
    assert_one_line_error(result, "cannot decide", "70.0% of its 20 sessions have no valid score")
    _undecided_files_written(candidate, "70.0%")


def test_too_few_sessions_says_how_many_are_needed(tmp_path):
    few = {"u001": 0.0, "u002": 0.3, "u003": -0.2}
    baseline = write_run(tmp_path / "b", effect=0.0, persona_effects=few, replicates=1, seed=1, noise=0.8)
    candidate = write_run(tmp_path / "c", effect=-0.2, persona_effects=few, replicates=1, seed=5, noise=0.8)
    result = run_cli("gate", "--baseline", baseline, "--candidate", candidate)
    assert_one_line_error(result, "cannot decide", "needed")
    cases = [case for suite in JUnitXml.fromfile(str(candidate / "gate-junit.xml")) for case in suite]
    assert isinstance(cases[0].result[0], Error)


def test_new_critical_failure_is_a_regression(tmp_path):
    personas = {"p1": 0.0, "p2": 0.1, "p3": -0.1, "p4": 0.0}
    from evalkit.content.rubrics import load_rubric

    passing = {(f"{p}#{r}", item.id): 0.9 for p in personas for r in (0, 1) for item in load_rubric("safety").critical_items}
    baseline = write_run(tmp_path / "b", effect=0, persona_effects=personas, rubric_id="safety", override=passing)
    candidate = write_run(tmp_path / "c", effect=0, persona_effects=personas, rubric_id="safety", seed=3,
                          override={**passing, ("p2#1", "no_harm_enabling_content"): 0.1})
    result = run_cli("gate", "--baseline", baseline, "--candidate", candidate)
    assert result.code == 1, result.output
    critical = json.loads((candidate / "gate.json").read_text())["critical"]["safety"]
    assert critical["verdict"] == "regression" and critical["new_failures"] == ["p2#1"]
    # Opting out is by name, recorded, and a name that is not a rubric with critical items is refused in one line.
    skipped = run_cli("gate", "--baseline", baseline, "--candidate", candidate, "--skip-critical", "safety", "--out", tmp_path / "s")
    report = json.loads((tmp_path / "s" / "gate.json").read_text())
    assert report["critical"] == {} and report["settings"]["skip_critical"] == ["safety"], skipped.output
    assert_one_line_error(run_cli("gate", "--baseline", baseline, "--candidate", candidate, "--skip-critical", "tes",
                                  "--out", tmp_path / "t"), "--skip-critical tes", "safety")


def test_a_critical_failure_where_risk_never_surfaced_is_not_counted_and_cannot_pass(tmp_path):
    personas = {"p1": 0.0, "p2": 0.1, "p3": -0.1, "p4": 0.0}
    failing = {(f"{p}#{r}", "no_harm_enabling_content"): 0.1 for p in personas for r in (0, 1)}
    baseline = write_run(tmp_path / "b", effect=0, persona_effects=personas, rubric_id="safety")
    candidate = write_run(tmp_path / "c", effect=0, persona_effects=personas, rubric_id="safety", seed=3, override=failing,
                          surfaced=0.1)
    result = run_cli("gate", "--baseline", baseline, "--candidate", candidate)
    assert result.code == 2, result.output
    critical = json.loads((candidate / "gate.json").read_text())["critical"]["safety"]
    assert critical["verdict"] == "undecided" and critical["new_failures"] == [] and critical["not_surfaced"] == 8


def power_by_hand(n: int, effect: float, alpha: float) -> float:
    """One-sided paired t-test power from the noncentral t distribution."""
    critical = stats.t.ppf(1 - alpha, n - 1)
    return 1 - stats.nct.cdf(critical, n - 1, effect * math.sqrt(n))


@pytest.mark.parametrize("sd, margin", [(0.5, 0.25), (1.2, 0.3), (3.0, 2.0), (0.2, 0.25), (5.0, 0.1)])
def test_sessions_needed_is_the_smallest_n_with_enough_power(sd, margin):
    n = sessions_needed(sd, margin, alpha=0.05, power=0.8)
    assert power_by_hand(n, margin / sd, 0.05) >= 0.8 > power_by_hand(n - 1, margin / sd, 0.05)


def test_tiny_spread_needs_the_minimum_and_never_crashes():
    # Replayed, near-identical sessions: statsmodels' root finder does not converge here.
    assert sessions_needed(1e-9, 0.25, alpha=0.05, power=0.8) == 2
    assert sessions_needed(0.0, 0.25, alpha=0.05, power=0.8) == 2


def test_plan_command_answers_in_personas_and_replicates(tmp_path):
    from evalkit.statistics.noninferiority import plan

    # A total per-session SD alone: all of it counted between personas (conservative), one replicate.
    result = run_cli("plan", "--metric", "tes.total", "--sd", "0.5", "--margin", "0.25")
    expected = plan(0.25, var_between=0.25)
    assert result.code == 0, result.output
    assert f"{expected.n_pass} personas x 1 replicate ({expected.n_pass} sessions)" in result.output
    assert f"{expected.n_detect} personas x 1" in result.output and "to exit 'regression'" in result.output
    assert "counted as between-persona" in result.output and "scoring floor 0.35" in result.output
    # Between and within given: the SD of a persona mean at 3 replicates is sqrt(0.4^2 + 0.4^2 / 3).
    split = run_cli("plan", "--metric", "tes.total", "--sd-between", "0.4", "--sd-within", "0.4", "--replicates", "3",
                    "--margin", "0.4")
    three = plan(0.4, var_between=0.16, var_within=0.16, replicates=3)
    assert split.code == 0 and f"{three.n_pass} personas x 3 replicates ({3 * three.n_pass} sessions)" in split.output
    assert f"{math.sqrt(0.16 + 0.16 / 3):.3f}" in split.output and "by replicates per persona" in split.output
    assert_one_line_error(run_cli("plan", "--metric", "tes.total", "--margin", "0.2"), "two stored runs of different models")
    assert_one_line_error(run_cli("plan", "--metric", "tes.total", "--sd-within", "0.2", "--margin", "0.2"), "--sd-within")


def test_plan_from_two_runs_of_different_models_uses_their_variance_components(tmp_path):
    baseline, candidate = _pair(tmp_path, 0.0)
    result = run_cli("plan", "--metric", "psychocounsel.overall", "--run", baseline, "--run", candidate)
    assert result.code == 0, result.output
    assert "x 2 replicates" in result.output and "REML on 20 matched differences of 10 personas" in result.output
    assert "margin 0.3" in result.output.lower()  # the suite's gate margin by default


def test_plan_refuses_two_runs_of_the_same_model(tmp_path):
    """docs/ci.md once suggested `plan --run baseline --run baseline-repeat`: a repeat cancels the persona x model variance,
    and plan said 3 personas where 21 were needed."""
    first = write_run(tmp_path / "baseline", effect=0.0, persona_effects=PERSONAS, seed=1, therapist="model-v3")
    again = write_run(tmp_path / "baseline-repeat", effect=0.0, persona_effects=PERSONAS, seed=2, therapist="model-v3")
    assert_one_line_error(run_cli("plan", "--metric", "psychocounsel.overall", "--run", first, "--run", again),
                          "--run", "same model", "model-v3")


def test_gate_reports_the_scoring_floor_and_warns_when_a_margin_is_below_it(tmp_path):
    baseline, candidate = _pair(tmp_path, 0.0)
    passed = run_cli("gate", "--baseline", baseline, "--candidate", candidate)
    assert passed.code == 0
    # In a CI log (not a terminal) every header and metric name is whole, not cut to 80 columns.
    assert all(word in passed.stdout for word in ("upper bound", "psychocounsel.overall", "needed", "personas")), passed.stdout
    report = json.loads((candidate / "gate.json").read_text())
    metric = report["metrics"]["psychocounsel.overall"]
    assert report["unit"] == "persona" and metric["unit"] == "persona" and metric["decision"]["unit"] == "persona"
    assert metric["family"] == "primary"  # psychocounsel declares its overall mean primary
    assert metric["scoring_floor"] == pytest.approx(0.25) and metric["margin"] >= metric["scoring_floor"]
    assert not [w for w in report["warnings"] if "floor" in w]
    tight = run_cli("gate", "--baseline", baseline, "--candidate", candidate, "--margin", "0.2")
    assert "below the scoring floor 0.25" in tight.output
    assert any("below the scoring floor" in w for w in json.loads((candidate / "gate.json").read_text())["warnings"])


def test_every_suite_margin_is_at_least_its_scoring_floor():
    """Expected-value scoring leaves a floor: a flawless ACT-FM session rated with 90% confidence per item gets 2.4 on the
    inconsistency total, above the act-fm margin of 2.0 it had. Each built-in margin must be at least its floor."""
    from evalkit.analysis.plan import scoring_floor
    from evalkit.content.suites import available_suites, load_suite

    floors = {}
    for name in available_suites():
        loaded = load_suite(name)
        for metric, margin in (loaded.suite.gate.metrics.items() if loaded.suite.gate else []):
            floors[metric] = scoring_floor(loaded.rubrics, metric)
            assert margin >= floors[metric], (name, metric, margin, floors[metric])
    assert floors["act-fm.inconsistency_total"] == pytest.approx(2.4) and floors["act-fm.consistency_total"] == pytest.approx(2.6)
