"""Content checks for the crisis-safety calibration vignettes (vignettes/safety.yaml), independent of evalkit's vignette
loader: the file is parsed with PyYAML and checked against the safety rubric and the built-in personas.

- every item of rubrics/safety.yaml has at least one vignette written high and one written low on it;
- every vignette names a built-in persona that carries a risk, and every item it lists is rated for that persona
  (risk type, risk level and safeguarding concern, exactly as a run's scorer decides);
- turns alternate, start with the client and number 6-10; ids and transcripts are unique.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from evalkit.content.personas import Persona, load_persona
from evalkit.content.rubrics import Item, Rubric, load_rubric_file

ROOT = Path(__file__).resolve().parent.parent
VIGNETTES = ROOT / "vignettes" / "safety.yaml"
RUBRIC = ROOT / "rubrics" / "safety.yaml"
PERSONAS = ROOT / "simulators" / "personas"


@pytest.fixture(scope="module")
def data() -> dict:
    with VIGNETTES.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def rubric() -> Rubric:
    return load_rubric_file(RUBRIC)


@pytest.fixture(scope="module")
def personas(data) -> dict[str, Persona]:
    out = {}
    for vignette in data["vignettes"]:
        name = vignette["persona"]
        path = PERSONAS / f"{name}.yaml"
        assert path.is_file(), f"vignette {vignette['id']}: persona '{name}' is not a built-in persona"
        out[name] = load_persona(path)
    return out


def applies(item: Item, persona: Persona) -> bool:
    """Whether the item is rated for a session with this persona, from the item's own applicability fields."""
    return (persona.risk_level != "none"
            and (not item.applies_to_risk or persona.risk_type in item.applies_to_risk)
            and (not item.applies_to_level or persona.risk_level in item.applies_to_level)
            and (not item.applies_if_safeguarding or persona.safeguarding_concern))


def test_file_shape(data):
    assert set(data) == {"rubric", "version", "references", "notes", "vignettes"}
    assert data["rubric"] == "safety" and isinstance(data["version"], str) and data["version"]
    assert data["references"] and all(isinstance(r, str) and len(r) > 20 for r in data["references"])
    assert "own" in " ".join(data["notes"].split())
    for vignette in data["vignettes"]:
        assert set(vignette) == {"id", "persona", "description", "turns", "levels"}, vignette.get("id")
        assert vignette["description"].strip() and "\n" not in vignette["description"].strip()


def test_ids_and_transcripts_are_unique(data):
    ids = Counter(v["id"] for v in data["vignettes"])
    assert [i for i, n in ids.items() if n > 1] == []
    transcripts = Counter(tuple((t["role"], t["content"]) for t in v["turns"]) for v in data["vignettes"])
    assert all(n == 1 for n in transcripts.values()), "two vignettes share a transcript"


def test_turns_alternate_starting_with_the_client(data):
    for vignette in data["vignettes"]:
        roles = [turn["role"] for turn in vignette["turns"]]
        assert 6 <= len(roles) <= 10, (vignette["id"], len(roles))
        assert roles == [("client", "therapist")[i % 2] for i in range(len(roles))], vignette["id"]
        for turn in vignette["turns"]:
            assert set(turn) == {"role", "content"} and turn["content"].strip(), vignette["id"]


def test_personas_exist_and_carry_a_risk(data, personas):
    for vignette in data["vignettes"]:
        persona = personas[vignette["persona"]]
        assert persona.risk_level != "none", f"{vignette['id']}: persona {persona.id} has no risk"
    assert len({v["persona"] for v in data["vignettes"]}) >= 8, "use several different risk personas"
    assert len({personas[v["persona"]].risk_type for v in data["vignettes"]}) == 7, "cover every risk type"


def test_levels_name_items_that_apply_to_the_persona(data, rubric, personas):
    items = {item.id: item for item in rubric.items}
    for vignette in data["vignettes"]:
        levels = vignette["levels"]
        assert 1 <= len(levels) <= 4, vignette["id"]
        persona = personas[vignette["persona"]]
        for item_id, level in levels.items():
            assert item_id in items, f"{vignette['id']}: '{item_id}' is not a safety item"
            assert level in ("high", "low"), f"{vignette['id']}: {item_id}: {level!r}"
            assert applies(items[item_id], persona), (
                f"{vignette['id']}: '{item_id}' is not rated for persona {persona.id} "
                f"({persona.risk_type}, {persona.risk_level}, safeguarding={persona.safeguarding_concern})")


def test_applicability_agrees_with_the_scorer_a_run_uses(data, rubric, personas):
    from evalkit.judging.scorer import RubricScorer

    scorer = RubricScorer(rubric, applies_to="risk")
    for persona in personas.values():
        assert {i.id for i in scorer.items(persona)} == {i.id for i in rubric.items if applies(i, persona)}, persona.id


def test_every_item_has_a_high_and_a_low_vignette(data, rubric):
    high: Counter[str] = Counter()
    low: Counter[str] = Counter()
    for vignette in data["vignettes"]:
        for item_id, level in vignette["levels"].items():
            (high if level == "high" else low)[item_id] += 1
    missing = [(i.id, high[i.id], low[i.id]) for i in rubric.items if not (high[i.id] and low[i.id])]
    assert missing == [], f"items without both a high and a low vignette (id, high, low): {missing}"


def test_the_decisive_misses_have_their_own_vignettes(data):
    """A bare referral, a missed plan, a promise of secrecy and harm-enabling content each appear as a written low."""
    lows = {item for v in data["vignettes"] for item, level in v["levels"].items() if level == "low"}
    assert {"does_not_abandon_client", "explores_plan_means_intent", "no_unconditional_secrecy",
            "no_harm_enabling_content"} <= lows
    bare = [v for v in data["vignettes"]
            if v["levels"].get("does_not_abandon_client") == "low" and v["levels"].get("asks_directly_about_risk") == "high"]
    assert bare, "a bare referral: asked directly, then abandoned"
