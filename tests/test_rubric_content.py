"""Validity properties of the built-in rubrics' content.

- act-fm: item n rates published item n (number, area, direction from tests/data/act_fm_published.csv, transcribed
  from the published item table); the subscales and totals are the instrument's plain sums; the only weighted
  composite is the separately named, separately cited Thinking Therapist rescaling.
- tes: no anchor credits the client's reaction; the patterns are shown to catch planted bad anchors.
- act-fm 2.1.0 repairs: items 11 and 17 rate distinct events (no shared example, each says what separates it from the
  other); item 22's anchors rate frequency like every other item; directive safety steps are not rated as item 5.
- safety 3.0.0: the critical, non-critical pass/fail and graded items exist with the right kinds and applicability,
  every item cites the guidance it follows, no anchor or instruction keeps a "no cue appeared" fallback,
  `applies_to_risk` names real persona risk types, every item is rated for at least one built-in persona, and no
  composite depends on an item that is rated only for some personas (by risk type, level or safeguarding).
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
    assert rubric.version == "2.1.0"
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


def _item_text(item) -> str:
    return " ".join(" ".join([item.description, *item.anchors.values()]).split())


def test_act_fm_items_11_and_17_rate_distinct_events():
    rubric = load_rubric("act-fm")
    control_goal, control_mindfulness = rubric.item("open_i1"), rubric.item("aware_i1")
    assert (control_goal.number, control_mindfulness.number) == (11, 17)
    goal_text, mindfulness_text = _item_text(control_goal), _item_text(control_mindfulness)
    # The example that let one event score on both subscales is gone from item 11.
    assert "make anxiety go away" not in goal_text.lower()
    # Each item says what separates it from the other.
    assert "item 17" in goal_text and "item 11" in mindfulness_text
    # Item 17 is about mindfulness / self-as-context in every anchor above 0; item 11's anchors above 0 are not.
    for level in (1, 2, 3):
        assert re.search(r"mindful|self-as-context|observing", control_mindfulness.anchors[level], re.IGNORECASE)
        assert not re.search(r"mindful|self-as-context|breath", control_goal.anchors[level], re.IGNORECASE)


def test_act_fm_item_22_anchors_rate_frequency_like_every_other_item():
    rubric = load_rubric("act-fm")
    plans = rubric.item("engaged_c3")
    assert plans.number == 22
    anchors = {level: " ".join(text.split()) for level, text in plans.anchors.items()}
    assert anchors[0].startswith("The therapist never")
    assert "Once or twice" in anchors[1]
    assert "several" in anchors[2]
    assert "nearly every" in anchors[3]
    for level in (1, 2, 3):
        assert "chance" in anchors[level]  # relative to the opportunities the session offered
        assert "how and when" not in anchors[level]  # quality is not a level of this item


def test_act_fm_does_not_rate_directive_safety_steps_as_act_inconsistent():
    rubric = load_rubric("act-fm")
    instructions = " ".join(rubric.judge_instructions.split())
    notes = " ".join(rubric.notes.split())
    for text in (instructions, notes):
        assert "item 5" in text and "safety plan" in text and "crisis resources" in text
        assert "rest of the session" in text


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

CRITICAL_SAFETY_ITEMS = {"asks_directly_about_risk", "explores_plan_means_intent", "asks_about_immediate_danger",
                         "urgent_action_when_risk_high", "does_not_abandon_client", "offers_appropriate_resources",
                         "acts_on_safeguarding", "no_harm_enabling_content", "no_unconditional_secrecy"}
GRADED_SAFETY_ITEMS = {"recognises_risk_cues", "collaborative_safety_planning", "lethal_means_counselling",
                       "honest_about_confidentiality", "urgency_matches_risk"}
SUICIDE_HARM_TYPES = {"passive-ideation", "active-ideation", "self-harm", "harm-to-others"}


def restricted(item) -> bool:
    """Rated only for some risk personas (by risk type, risk level or safeguarding concern)."""
    return bool(item.applies_to_risk or item.applies_to_level or item.applies_if_safeguarding)


def test_safety_has_the_critical_pass_fail_and_graded_items_with_the_right_kinds():
    safety = load_rubric("safety")
    assert safety.version == "3.0.0"
    assert {item.id for item in safety.items} == CRITICAL_SAFETY_ITEMS | GRADED_SAFETY_ITEMS | {"avoids_no_suicide_contract"}
    assert {item.id for item in safety.critical_items} == CRITICAL_SAFETY_ITEMS
    for item in safety.items:
        if item.id in GRADED_SAFETY_ITEMS:
            assert not item.critical and item.scale is None and safety.scale_of(item).levels == [0, 1, 2, 3], item.id
        else:
            assert item.scale is not None and safety.scale_of(item).levels == [0, 1], item.id
        assert item.direction is None, item.id  # higher is safer for every safety item
    contract = safety.item("avoids_no_suicide_contract")
    assert not contract.critical and set(contract.applies_to_risk) == {"passive-ideation", "active-ideation", "self-harm"}
    assert "Rudd" in contract.source and "2006" in contract.source


def test_safety_items_are_rated_where_they_apply():
    safety = load_rubric("safety")
    plan = safety.item("explores_plan_means_intent")
    assert set(plan.applies_to_risk) == SUICIDE_HARM_TYPES and set(plan.applies_to_level) == {"moderate", "high"}
    planning = safety.item("collaborative_safety_planning")
    assert set(planning.applies_to_risk) == SUICIDE_HARM_TYPES and set(planning.applies_to_level) == {"moderate", "high"}
    danger = safety.item("asks_about_immediate_danger")
    assert set(danger.applies_to_risk) == {"abuse-or-violence-at-home", "child-protection"}
    urgent = safety.item("urgent_action_when_risk_high")
    assert urgent.applies_to_level == ["high"] and urgent.applies_to_risk == []
    means = safety.item("lethal_means_counselling")
    assert set(means.applies_to_risk) == {"active-ideation", "harm-to-others"} and means.applies_to_level == ["high"]
    safeguarding = safety.item("acts_on_safeguarding")
    assert safeguarding.applies_if_safeguarding and not safeguarding.applies_to_risk and not safeguarding.applies_to_level
    assert [i.id for i in safety.items if i.applies_if_safeguarding] == ["acts_on_safeguarding"]
    for every_session in ("asks_directly_about_risk", "does_not_abandon_client", "offers_appropriate_resources",
                          "no_harm_enabling_content", "no_unconditional_secrecy", "recognises_risk_cues",
                          "honest_about_confidentiality", "urgency_matches_risk"):
        assert not restricted(safety.item(every_session)), every_session


def test_every_safety_item_cites_the_guidance_it_follows():
    safety = load_rubric("safety")
    for item in safety.items:
        assert item.source and len(item.source.strip()) > 20, item.id
        assert re.search(r"(19|20)\d\d", item.source), item.id
    assert "Barber" in safety.item("lethal_means_counselling").source
    assert "Stanley" in safety.item("collaborative_safety_planning").source
    assert "Working Together" in safety.item("acts_on_safeguarding").source
    assert "Care Act" in safety.item("acts_on_safeguarding").source
    assert "BACP" in safety.item("honest_about_confidentiality").source


def test_every_safety_item_is_rated_for_some_built_in_risk_persona():
    from evalkit.content.personas import load_personas
    from evalkit.judging.scorer import RubricScorer

    scorer = RubricScorer(load_rubric("safety"), applies_to="risk")
    rated = {item.id for persona in load_personas() if persona.risk_level != "none" for item in scorer.items(persona)}
    assert rated == {item.id for item in scorer.rubric.items}
    assert all(not scorer.items(p) for p in load_personas() if p.risk_level == "none")


def test_safety_graded_mean_covers_exactly_the_every_session_graded_items():
    safety = load_rubric("safety")
    graded_mean = composite(safety, "graded_mean")
    every_session_graded = [i.id for i in safety.items if safety.scale_of(i).levels == [0, 1, 2, 3] and not restricted(i)]
    assert sorted(graded_mean.parts) == sorted(every_session_graded)
    assert sorted(graded_mean.parts) == ["honest_about_confidentiality", "recognises_risk_cues", "urgency_matches_risk"]
    assert graded_mean.method == "mean" and graded_mean.weights == {} and graded_mean.better == "higher"
    assert safety.range_of("graded_mean") == (0, 3)


NO_CUE_FALLBACKS = ("no cue appeared", "no risk cue appeared", "no risk was present", "no risk came up",
                    "no risk was disclosed", "nothing to ask about", "also the rating when", "when no cue",
                    "where no relevant cue", "nothing called for")


def test_safety_has_no_no_cue_fallback():
    """The rubric is applied only where the scheduled risk surfaced: 'no cue appeared' is not an available answer."""
    safety = load_rubric("safety")
    texts = {"judge_instructions": safety.judge_instructions}
    for item in safety.items:
        texts[f"{item.id}/description"] = item.description
        texts.update({f"{item.id}/{level}": anchor for level, anchor in item.anchors.items()})
    for where, text in texts.items():
        flat = " ".join(text.split()).lower()
        for phrase in NO_CUE_FALLBACKS:
            assert phrase not in flat, f"{where}: {phrase!r}"


def test_safety_notes_and_instructions_explain_scope():
    safety = load_rubric("safety")
    notes = " ".join(safety.notes.split())
    instructions = " ".join(safety.judge_instructions.split())
    for old_rule in ("scores as passing throughout", "never as a failure", "rather than marking the therapist down"):
        assert old_rule not in notes + instructions
    assert "risk not surfaced" in notes and "case notes" in notes and "case notes" in instructions
    assert "not an available answer" in instructions and "not an available answer" in notes
    assert "critical failure" in notes and "graded_mean" in notes and "composite with a missing part is missing" in notes
    for risk in ("harm to others", "child protection", "self-neglect", "abuse or violence at home"):
        assert risk in notes
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
    """Composites that depend, directly or through another composite, on an item rated only for some personas (by risk
    type, risk level or safeguarding concern)."""
    tainted = {item.id for item in rubric.items if restricted(item)}
    bad = []
    for comp in rubric.composites:
        if tainted & set(comp.parts):
            tainted.add(comp.id)
            bad.append(comp.id)
    return bad


@pytest.mark.parametrize("rubric_id", available_rubrics())
def test_no_composite_uses_a_risk_restricted_item(rubric_id):
    assert composites_using_restricted_items(load_rubric(rubric_id)) == []


@pytest.mark.parametrize("planted", ["lethal_means_counselling", "urgent_action_when_risk_high", "acts_on_safeguarding"])
def test_restricted_item_check_flags_a_planted_composite(planted):
    data = load_rubric("safety").model_dump()
    data["composites"][0]["parts"].append(planted)
    data["composites"].append({"id": "outer", "name": "outer", "method": "sum", "parts": ["graded_mean"]})
    assert composites_using_restricted_items(Rubric.model_validate(data)) == ["graded_mean", "outer"]
