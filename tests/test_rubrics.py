from collections import Counter

import pytest

from evalkit.content.rubrics import available_rubrics, load_rubric, load_rubric_file
from evalkit.core.errors import ConfigError


def test_builtin_rubrics_load_and_cite_their_instrument():
    assert {"act-fm", "tes", "psychocounsel"} <= set(available_rubrics())
    for rubric_id in ("act-fm", "tes", "psychocounsel"):
        rubric = load_rubric(rubric_id)
        assert rubric.version and len(rubric.source) > 40
        for item in rubric.items:
            assert sorted(item.anchors) == rubric.scale.levels


def test_act_fm_structure():
    rubric = load_rubric("act-fm")
    assert len(rubric.items) == 25
    assert (rubric.scale.min, rubric.scale.max) == (0, 3)
    assert [rubric.scale.labels[i] for i in range(4)] == ["never", "rarely", "sometimes", "consistently"]
    counts = Counter((item.area, item.direction) for item in rubric.items)
    assert counts == {("stance", "consistent"): 4, ("stance", "inconsistent"): 3,
                      **{(area, d): 3 for area in ("open", "aware", "engaged") for d in ("consistent", "inconsistent")}}
    # The instrument's totals are plain sums: 13 consistent items (0-39), 12 inconsistent items (0-36).
    assert rubric.range_of("consistency_total") == (0, 39)
    assert rubric.range_of("consistency_total_tt_rescaled") == (0, 36)
    assert rubric.range_of("inconsistency_total") == (0, 36)
    assert rubric.range_of("stance_consistent") == (0, 12)
    assert rubric.range_of("open_consistent") == (0, 9)
    areas = [c.id for c in rubric.composites if c.id.endswith("consistent")]
    assert len(areas) == 8


def test_act_fm_totals_follow_the_published_rule():
    rubric = load_rubric("act-fm")
    scores = {item.id: 0.0 for item in rubric.items}
    for item in rubric.items:
        if item.area == "stance" and item.direction == "consistent":
            scores[item.id] = 3.0  # stance-consistent sum 12
        if item.area == "open" and item.direction == "consistent":
            scores[item.id] = 1.0  # open-consistent sum 3
        if item.area == "engaged" and item.direction == "inconsistent":
            scores[item.id] = 2.0  # engaged-inconsistent sum 6
    composites = rubric.composite_scores(scores)
    assert composites["stance_consistent"] == 12
    assert composites["consistency_total"] == 12 + 3
    assert composites["consistency_total_tt_rescaled"] == pytest.approx(12 * 0.75 + 3)
    assert composites["inconsistency_total"] == 6


def test_a_missing_item_makes_its_composites_missing_not_zero():
    rubric = load_rubric("act-fm")
    scores = {item.id: 1.0 for item in rubric.items}
    scores["open_c1"] = None
    composites = rubric.composite_scores(scores)
    assert composites["open_consistent"] is None and composites["consistency_total"] is None
    assert composites["open_inconsistent"] == 3 and composites["inconsistency_total"] == 12


def test_tes_and_psychocounsel_structure():
    tes = load_rubric("tes")
    assert len(tes.items) == 9 and tes.scale.levels == list(range(1, 8))
    assert tes.composite_scores({i.id: float(n % 7 + 1) for n, i in enumerate(tes.items)})["total"] == pytest.approx(
        sum(n % 7 + 1 for n in range(9)) / 9)
    pc = load_rubric("psychocounsel")
    assert [i.id for i in pc.items] == ["empathy", "relevance", "clarity", "safety", "exploration", "autonomy", "staging"]
    assert pc.scale.levels == [1, 2, 3, 4, 5] and pc.unit == "response"


@pytest.mark.parametrize("mutation, field", [
    (lambda t: t.replace("max: 3", "max: 2", 1), "scale"),
    (lambda t: t.replace("unit: transcript", "unit: paragraph"), "unit"),
    (lambda t: t + "\nunexpected_key: 1\n", "unexpected_key"),
])
def test_malformed_rubric_names_file_and_field(tmp_path, mutation, field):
    from evalkit.core.resources import rubrics_dir

    bad = tmp_path / "act-fm.yaml"
    bad.write_text(mutation((rubrics_dir() / "act-fm.yaml").read_text()))
    with pytest.raises(ConfigError) as info:
        load_rubric_file(bad)
    message = str(info.value)
    assert str(bad) in message and field in message and "\n" not in message
