"""Judge validation: agreement statistics against published worked examples, and `evalkit judge validate`
end to end against the tiny model served by vLLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from evalkit.statistics.agreement import icc_absolute, kripp_alpha, qwk

from .conftest import assert_one_line_error, run_cli

# Shrout & Fleiss (1979), Psychological Bulletin 86(2), Table 2: 6 targets x 4 judges.
# They print ICC(2,1) = .29 and ICC(2,4) = .62 (two-way random, absolute agreement).
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C: 4 observers x 12 units,
# missing values. Printed: nominal .743, ordinal .815, interval .849.
N = np.nan
KRIPPENDORFF = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
                         [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]])


def test_icc_matches_shrout_and_fleiss():
    single, average = icc_absolute(SHROUT_FLEISS)
    assert round(single, 2) == 0.29 and round(average, 2) == 0.62


@pytest.mark.parametrize("level, printed", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_matches_the_published_example(level, printed):
    assert round(kripp_alpha(KRIPPENDORFF, level, [1, 2, 3, 4, 5] if level == "ordinal" else None), 3) == printed


def icc_a1_by_hand(x: np.ndarray) -> float:
    """McGraw & Wong (1996) ICC(A,1) from two-way ANOVA mean squares."""
    n, k = x.shape
    grand = x.mean()
    ms_rows = k * ((x.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((x.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    ss_err = ((x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand) ** 2).sum()
    ms_err = ss_err / ((n - 1) * (k - 1))
    return (ms_rows - ms_err) / (ms_rows + (k - 1) * ms_err + k / n * (ms_cols - ms_err))


def qwk_by_hand(a: np.ndarray, b: np.ndarray, low: int, high: int) -> float:
    size = high - low + 1
    observed = np.zeros((size, size))
    for x, y in zip(a.astype(int), b.astype(int), strict=True):
        observed[x - low, y - low] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    weights = np.array([[(i - j) ** 2 for j in range(size)] for i in range(size)]) / (size - 1) ** 2
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def test_icc_by_hand_agrees_with_shrout_and_fleiss():
    assert round(icc_a1_by_hand(SHROUT_FLEISS), 2) == 0.29


def test_quadratic_weighted_kappa_by_hand():
    a, b = np.array([1, 2, 3, 4, 5, 3, 2, 4]), np.array([1, 3, 3, 5, 4, 2, 2, 4])
    levels = [1, 2, 3, 4, 5]
    observed = np.zeros((5, 5))
    for x, y in zip(a, b, strict=True):
        observed[x - 1, y - 1] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    weights = np.array([[(i - j) ** 2 for j in range(5)] for i in range(5)]) / 16
    assert qwk(a, b, levels) == pytest.approx(1 - (weights * observed).sum() / (weights * expected).sum(), abs=1e-12)


def _ratings(path, materials=6):
    rng = np.random.default_rng(4)
    from evalkit.content.rubrics import load_rubric

    items = [i.id for i in load_rubric("tes").items]
    lines = []
    for m in range(materials):
        turns = [{"role": "client", "content": f"I have not slept properly for weeks ({m})."},
                 {"role": "therapist", "content": "That sounds exhausting. What happens when you lie down?"}]
        quality = rng.integers(2, 7)
        for rater in ("r1", "r2", "r3"):
            for n, item in enumerate(items):
                row = {"material_id": f"m{m}", "rubric": "tes", "item": item, "rater": rater,
                       "score": int(np.clip(quality + rng.integers(-1, 2), 1, 7))}
                if rater == "r1" and n == 0:
                    row["turns"] = turns
                lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_ratings_name_the_line_and_field(tmp_path):
    path = _ratings(tmp_path / "ratings.jsonl")
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace('"score": ', '"score": 9') if '"score": ' in lines[5] else lines[5]
    path.write_text("\n".join(lines) + "\n")
    from evalkit.core.errors import ConfigError
    from evalkit.judging.validation import load_ratings

    with pytest.raises(ConfigError, match=r"ratings.jsonl:6: field 'score'"):
        load_ratings(path)


@pytest.mark.vllm
def test_judge_validate_end_to_end_and_recorded_in_runs(vllm_endpoint, tmp_path):
    ratings = _ratings(tmp_path / "ratings.jsonl")
    out = tmp_path / "validation"
    result = run_cli("judge", "validate", "--ratings", ratings, "--judge-endpoint", vllm_endpoint, "--out", out,
                     "--bootstrap", "50", "--repeats", "2", "--judge-min-mass", "0")  # a random judge: no mass rule
    assert result.code == 0, result.output
    report = json.loads((out / "validation.json").read_text())
    warmth = report["rubrics"]["tes"]["items"]["warmth"]
    keys = {"icc_a1", "icc_ak", "qwk", "spearman", "krippendorff_alpha", "mae", "exact", "adjacent"}
    assert keys <= set(warmth["judge_human"]) and keys <= set(warmth["human_human"])
    assert set(warmth["judge_human_ci"]) == keys and warmth["units"] == 6 and warmth["raters"] == 3
    assert "total" in report["rubrics"]["tes"]["composites"]
    # Judge-human numbers recomputed independently from the judge's stored scores and the ratings.
    judge = np.array([s["expected"] for s in report["judge_scores"] if s["item"] == "warmth"])
    rows = [json.loads(line) for line in ratings.read_text().splitlines()]
    human = np.array([np.mean([r["score"] for r in rows if r["item"] == "warmth" and r["material_id"] == f"m{m}"])
                      for m in range(6)])
    assert warmth["judge_human"]["mae"] == pytest.approx(np.mean(np.abs(judge - human)), abs=1e-12)
    assert warmth["judge_human"]["spearman"] == pytest.approx(stats.spearmanr(judge, human).statistic, abs=1e-12)
    assert warmth["judge_human"]["exact"] == pytest.approx(np.mean(np.rint(judge) == np.rint(human)), abs=1e-12)
    assert warmth["judge_human"]["adjacent"] == pytest.approx(np.mean(np.abs(np.rint(judge) - np.rint(human)) <= 1), abs=1e-12)
    assert warmth["judge_human"]["icc_a1"] == pytest.approx(icc_a1_by_hand(np.column_stack([judge, human])), abs=1e-9)
    assert warmth["judge_human"]["qwk"] == pytest.approx(qwk_by_hand(np.rint(judge), np.rint(human), 1, 7), abs=1e-9)
    assert report["repeat_variability"]["repeats"] == 2 and report["repeat_variability"]["mean_sd"] < 1e-3

    # A run records the validation report of its judge; a report about another judge is refused.
    run = run_cli("run", "--endpoint", vllm_endpoint, "--suite", "tes", "--sessions", "2", "--turns", "1",
                  "--max-tokens", "8", "--no-adherence", "--judge-validation", out / "validation.json", "--out", tmp_path / "run")
    assert run.code == 0, run.output
    recorded = json.loads((tmp_path / "run" / "manifest.json").read_text())["judge_validation"]
    assert recorded["sha256"] and recorded["raters"] == 3
    assert "validated against 3 human raters on 6 materials" in (tmp_path / "run" / "report.html").read_text()
    report["judge"]["identity"] = "some-other-judge"
    (tmp_path / "other.json").write_text(json.dumps(report))
    other = run_cli("run", "--endpoint", vllm_endpoint, "--suite", "tes", "--sessions", "2", "--turns", "1",
                    "--judge-validation", tmp_path / "other.json", "--out", tmp_path / "run2")
    assert_one_line_error(other, "validated judge some-other-judge")
    # The gate can insist on a validated judge.
    plain = run_cli("run", "--endpoint", vllm_endpoint, "--suite", "tes", "--sessions", "2", "--turns", "1",
                    "--max-tokens", "8", "--no-adherence", "--out", tmp_path / "plain")
    assert plain.code == 0
    gate = run_cli("gate", "--baseline", tmp_path / "plain", "--candidate", tmp_path / "run", "--require-validated-judge")
    assert_one_line_error(gate, "records no judge validation report")
