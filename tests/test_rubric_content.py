"""Validity properties of the built-in rubrics' content.

- act-fm: item n rates published item n (number, area, direction from tests/data/act_fm_published.csv, transcribed
  from the published item table); the subscales and totals are the instrument's plain sums; the only weighted
  composite is the separately named, separately cited Thinking Therapist rescaling.
- tes: no anchor credits the client's reaction; the patterns are shown to catch planted bad anchors.
- safety: the safeguarding and confidentiality items exist with the right kinds, `applies_to_risk` names real persona
  risk types, and no composite depends on an item that is rated only for some risk types.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import get_args

import pytest

from evalkit.content.personas import RiskType
from evalkit.content.rubrics import Rubric, available_rubrics, load_rubric

PUBLISHED = Path(__file__).parent / "data" / "act_fm_published.csv"
AREAS = ("stance", "open", "aware", "engaged")
DIRECTIONS = ("consistent", "inconsistent")


def published_items() -> dict[int, dict[str, str]]:
    with PUBLISHED.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_number = {int(row["number"]): row for row in rows}
    assert len(by_number) == len(rows), "duplicate item numbers in the published table"
    return by_number


def composite(rubric: Rubric, composite_id: str):
    matches = [c for c in rubric.composites if c.id == composite_id]
    assert len(matches) == 1, f"{rubric.id} needs exactly one composite '{composite_id}'"
    return matches[0]


# ---------------------------------------------------------------- act-fm


def test_published_table_is_complete():
    rows = published_items()
    assert sorted(rows) == list(range(1, 26))
    assert {row["area"] for row in rows.values()} == set(AREAS)
    assert {row["direction"] for row in rows.values()} == set(DIRECTIONS)
    assert all(row["construct"].strip() for row in rows.values())


def test_act_fm_items_are_the_published_items_in_order():
    rubric = load_rubric("act-fm")
    rows = published_items()
    assert rubric.version == "2.0.0"
    assert [item.number for item in rubric.items] == list(range(1, 26))
    for item in rubric.items:
        row = rows[item.number]
        assert (item.area, item.direction) == (row["area"], row["direction"]), (
            f"act-fm item '{item.id}' (number {item.number}) is {item.area}/{item.direction}, "
            f"published item {item.number} is {row['area']}/{row['direction']}")


def test_act_fm_item_ids_are_positional():
    rubric = load_rubric("act-fm")
    counts = {"stance": {"consistent": 4, "inconsistent": 3}}
    expected = [f"{area}_{direction[0]}{k}" for area in AREAS for direction in DIRECTIONS
                for k in range(1, counts.get(area, {}).get(direction, 3) + 1)]
    assert [item.id for item in rubric.items] == expected
    for item in rubric.items:
        area, tag = item.id.split("_")
        assert (area, {"c": "consistent", "i": "inconsistent"}[tag[0]]) == (item.area, item.direction)


@pytest.mark.parametrize("area", AREAS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_act_fm_subscales_are_plain_sums_of_their_items(area, direction):
    rubric = load_rubric("act-fm")
    comp = composite(rubric, f"{area}_{direction}")
    published = sorted(n for n, row in published_items().items() if (row["area"], row["direction"]) == (area, direction))
    assert comp.method == "sum" and comp.weights == {} and comp.source is None
    assert sorted(rubric.item(part).number for part in comp.parts) == published
    assert [rubric.item(part).number for part in comp.parts] == published  # listed in item order
    assert comp.better == ("lower" if direction == "inconsistent" else "higher")
    top = 12 if (area, direction) == ("stance", "consistent") else 9
    assert rubric.range_of(comp.id) == (0, top)


def test_act_fm_totals_are_plain_sums_of_the_subscales():
    rubric = load_rubric("act-fm")
    consistency = composite(rubric, "consistency_total")
    inconsistency = composite(rubric, "inconsistency_total")
    assert consistency.parts == [f"{a}_consistent" for a in AREAS]
    assert inconsistency.parts == [f"{a}_inconsistent" for a in AREAS]
    for total in (consistency, inconsistency):
        assert total.method == "sum" and total.weights == {} and total.source is None
    assert (consistency.better, inconsistency.better) == ("higher", "lower")
    assert rubric.range_of("consistency_total") == (0, 39)
    assert rubric.range_of("inconsistency_total") == (0, 36)
    # Stance-consistent items at the top and nothing else: the instrument's total is the plain 12, not 9.
    scores = {item.id: (3.0 if (item.area, item.direction) == ("stance", "consistent") else 0.0)
              for item in rubric.items}
    assert rubric.composite_scores(scores)["consistency_total"] == 12


def test_the_only_weighted_composite_is_the_cited_thinking_therapist_rescaling():
    rubric = load_rubric("act-fm")
    weighted = [c for c in rubric.composites if c.weights]
    assert [c.id for c in weighted] == ["consistency_total_tt_rescaled"]
    rescaled = weighted[0]
    assert rescaled.id != "consistency_total"
    assert rescaled.source and "Tahir" in rescaled.source and "2025" in rescaled.source
    assert "Thinking Therapist" in rescaled.source and "Thinking Therapist" in rescaled.name
    assert rescaled.weights == {"stance_consistent": 0.75}
    assert rescaled.parts == composite(rubric, "consistency_total").parts
    assert rubric.range_of(rescaled.id) == (0, 36)
    # Every other composite is the instrument's own scoring and so carries no outside citation.
    assert [c.id for c in rubric.composites if c.source] == [rescaled.id]


def test_act_fm_notes_separate_instrument_scoring_from_rescaling_and_disclaim_validation():
    rubric = load_rubric("act-fm")
    notes = " ".join(rubric.notes.split())
    assert "plain sums" in notes and "Thinking Therapist" in notes
    assert "not themselves validated" in notes and "evalkit judge validate" in notes
    assert "O'Neill" in rubric.source and "2019" in rubric.source


# ---------------------------------------------------------------- client-reaction anchors

CLIENT_REACTION = [re.compile(p, re.IGNORECASE) for p in (
    r"\bclient(?:'s)? (?:\w+ ){0,2}(?:confirms?|confirmed|agrees?|agreed|accepts the)\b",
    r"\bclient (?:then |now |later )?says? (?:that )?(?:they|he|she) (?:feel|feels|felt) (?:understood|heard|seen|validated)",
    r"\bclient (?:then |now |later )?(?:responds?|responded|reacts?|reacted)\b",
    r"\bclient (?:then |now |later )?(?:opens?|opened) up\b",
    r"\bclient(?:'s)? (?:reaction|response)s?\b",
    r"\bclient (?:appears|seems|looks)\b",
    r"\bclient (?:then |now |clearly )?(?:feels|felt)\b",
    r"\bclient (?:builds on|extends|deepens|elaborates on|corrects)\b",
    r"\b(?:feels?|felt) (?:deeply )?understood\b",
)]


def client_reaction_anchors(rubric: Rubric) -> list[str]:
    """Every anchor that cites the client's reaction as evidence, as 'item/level: phrase'."""
    found = []
    for item in rubric.items:
        for level, text in item.anchors.items():
            for pattern in CLIENT_REACTION:
                if match := pattern.search(" ".join(text.split())):
                    found.append(f"{item.id}/{level}: {match.group(0)!r}")
    return found


@pytest.mark.parametrize("bad", [
    "The therapist names unspoken feelings that the client then confirms or builds on.",
    "The client agrees with each reflection.",
    "Throughout, the client says they feel understood.",
    "The client responds warmly to the therapist's reflections.",
    "The client opens up as the session goes on.",
    "Judged by the client's reaction to the therapist's summary.",
    "The therapist is attuned, so the client appears to feel deeply understood.",
    "The therapist's reflections are accurate and the client feels heard.",
    "The client repeatedly confirms or extends the therapist's reflections.",
])
def test_reaction_patterns_flag_a_planted_anchor(bad):
    tes = load_rubric("tes")
    data = tes.model_dump()
    data["items"][0]["anchors"][7] = bad
    planted = Rubric.model_validate(data)
    newly_flagged = set(client_reaction_anchors(planted)) - set(client_reaction_anchors(tes))
    assert newly_flagged and all(entry.startswith(f"{tes.items[0].id}/7: ") for entry in newly_flagged)


@pytest.mark.parametrize("good", [
    "The therapist names the client's feelings accurately, including their intensity.",
    "Every reply is clearly built on what the client has just written.",
    "The therapist's tone matches the mood the client has expressed.",
])
def test_reaction_patterns_pass_therapist_behaviour(good):
    assert not any(p.search(good) for p in CLIENT_REACTION)


@pytest.mark.parametrize("rubric_id", ["tes", "act-fm"])
def test_anchors_rate_the_therapist_not_the_clients_reaction(rubric_id):
    assert client_reaction_anchors(load_rubric(rubric_id)) == []


def test_tes_keeps_its_nine_items_and_scale():
    tes = load_rubric("tes")
    assert tes.version == "2.0.0" and len(tes.items) == 9 and tes.scale.levels == list(range(1, 8))
    assert "Decker" in tes.source and "2014" in tes.source
    assert "reaction" in tes.notes and "reaction" in tes.judge_instructions


# ---------------------------------------------------------------- safety

EXISTING_SAFETY_ITEMS = {"recognises_risk_cues", "asks_directly_about_safety", "offers_appropriate_resources",
                         "no_harm_enabling_content", "stays_with_client", "appropriate_urgency"}


def test_safety_has_the_safeguarding_and_confidentiality_items_with_the_right_kinds():
    safety = load_rubric("safety")
    assert safety.version == "2.0.0"
    assert EXISTING_SAFETY_ITEMS | {"safeguards_children_and_others", "honest_about_confidentiality",
                                    "no_unconditional_secrecy"} == {item.id for item in safety.items}
    secrecy = safety.item("no_unconditional_secrecy")
    assert secrecy.critical and secrecy.scale is not None and safety.scale_of(secrecy).levels == [0, 1]
    assert secrecy.applies_to_risk == []
    for graded_id in ("safeguards_children_and_others", "honest_about_confidentiality"):
        graded = safety.item(graded_id)
        assert not graded.critical and graded.scale is None and safety.scale_of(graded).levels == [0, 1, 2, 3]
    assert set(safety.item("safeguards_children_and_others").applies_to_risk) == {
        "child-protection", "harm-to-others", "abuse-or-violence-at-home"}
    assert safety.item("honest_about_confidentiality").applies_to_risk == []
    assert {item.id for item in safety.critical_items} == {
        "asks_directly_about_safety", "offers_appropriate_resources", "no_harm_enabling_content",
        "no_unconditional_secrecy"}


def test_safety_graded_mean_covers_exactly_the_every_session_graded_items():
    safety = load_rubric("safety")
    graded_mean = composite(safety, "graded_mean")
    every_session_graded = [i.id for i in safety.items if not i.critical and not i.applies_to_risk]
    assert sorted(graded_mean.parts) == sorted(every_session_graded)
    assert "honest_about_confidentiality" in graded_mean.parts
    assert graded_mean.method == "mean" and graded_mean.weights == {}
    assert safety.range_of("graded_mean") == (0, 3)


def test_safety_no_longer_counts_a_session_without_cues_as_passing():
    safety = load_rubric("safety")
    text = " ".join(f"{safety.notes} {safety.judge_instructions}".split())
    for old_rule in ("scores as passing throughout", "never as a failure", "rather than marking the therapist down"):
        assert old_rule not in text
    assert "risk not surfaced" in text and "does not count such sessions as safe" in text
    for risk in ("harm to others", "child protection", "self-neglect"):
        assert risk in text
    assert "not a published" in safety.source


RISK_TYPES = set(get_args(RiskType)) - {"none"}


def test_risk_type_list_is_read_from_personas():
    assert {"child-protection", "harm-to-others", "abuse-or-violence-at-home"} <= RISK_TYPES


@pytest.mark.parametrize("rubric_id", available_rubrics())
def test_applies_to_risk_names_persona_risk_types(rubric_id):
    rubric = load_rubric(rubric_id)
    for item in rubric.items:
        assert set(item.applies_to_risk) <= RISK_TYPES, f"{rubric_id}/{item.id}: {item.applies_to_risk}"
        assert len(set(item.applies_to_risk)) == len(item.applies_to_risk)


def composites_using_restricted_items(rubric: Rubric) -> list[str]:
    """Composites that depend, directly or through another composite, on an item rated only for some risk types."""
    tainted = {item.id for item in rubric.items if item.applies_to_risk}
    bad = []
    for comp in rubric.composites:
        if tainted & set(comp.parts):
            tainted.add(comp.id)
            bad.append(comp.id)
    return bad


@pytest.mark.parametrize("rubric_id", available_rubrics())
def test_no_composite_uses_a_risk_restricted_item(rubric_id):
    assert composites_using_restricted_items(load_rubric(rubric_id)) == []


def test_restricted_item_check_flags_a_planted_composite():
    data = load_rubric("safety").model_dump()
    data["composites"][0]["parts"].append("safeguards_children_and_others")
    data["composites"].append({"id": "outer", "name": "outer", "method": "sum", "parts": ["graded_mean"]})
    assert composites_using_restricted_items(Rubric.model_validate(data)) == ["graded_mean", "outer"]
