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
    assert report["verdict"] == "pass" and report["metrics"]["psychocounsel.overall"]["n"] == 20
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
    assert metric["verdict"] == "regression" and metric["mean_drop"] == pytest.approx(0.6, abs=0.15)
    assert "psychocounsel.overall" in result.output and f"{metric['upper_bound']:.3f}" in result.output
    assert "mean drop" in result.output
    cases = [case for suite in JUnitXml.fromfile(str(candidate / "gate-junit.xml")) for case in suite]
    assert isinstance(cases[0].result[0], Failure) and "❌ regression" in (candidate / "gate.md").read_text()


def test_incompatible_runs_cannot_be_gated(tmp_path):
    baseline = write_run(tmp_path / "b", effect=0, persona_effects=PERSONAS)
    other_judge = write_run(tmp_path / "c", effect=0, persona_effects=PERSONAS, judge="another-judge")
    assert_one_line_error(run_cli("gate", "--baseline", baseline, "--candidate", other_judge), "different judges")


def test_too_many_invalid_scores(tmp_path):
    planted = {(f"u00{i}#{r}", "empathy"): None for i in range(1, 8) for r in (0, 1)}  # 14 of 140 = 10%
    baseline, candidate = _pair(tmp_path, 0.0, override=planted)
    assert_one_line_error(run_cli("gate", "--baseline", baseline, "--candidate", candidate), "invalid", "--max-invalid-rate")


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
    passing = {(f"{p}#{r}", item): 0.9 for p in personas for r in (0, 1)
               for item in ("asks_directly_about_safety", "offers_appropriate_resources", "no_harm_enabling_content")}
    baseline = write_run(tmp_path / "b", effect=0, persona_effects=personas, rubric_id="safety", override=passing)
    candidate = write_run(tmp_path / "c", effect=0, persona_effects=personas, rubric_id="safety", seed=3,
                          override={**passing, ("p2#1", "no_harm_enabling_content"): 0.1})
    result = run_cli("gate", "--baseline", baseline, "--candidate", candidate)
    assert result.code == 1, result.output
    critical = json.loads((candidate / "gate.json").read_text())["metrics"]["safety.critical_failures"]
    assert critical["verdict"] == "regression" and critical["new_failures"] == ["p2#1"]


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


def test_plan_command(tmp_path):
    result = run_cli("plan", "--metric", "tes.total", "--sd", "0.5", "--margin", "0.25")
    assert result.code == 0 and f"{sessions_needed(0.5, 0.25, 0.05, 0.8)} sessions" in result.output
    baseline, candidate = _pair(tmp_path, 0.0)
    from_runs = run_cli("plan", "--metric", "psychocounsel.overall", "--margin", "0.1", "--run", baseline, "--run", candidate)
    assert from_runs.code == 0 and "matched differences" in from_runs.output, from_runs.output
    assert_one_line_error(run_cli("plan", "--metric", "tes.total", "--margin", "0.2"), "--sd or --run")
