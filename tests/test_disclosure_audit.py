"""The disclosure pacing audit: the shipped personas leak no scheduled disclosure early, planted leaks are caught
even when reworded, ordinary shared vocabulary is not flagged, and no risk fact or risk word sits in what a risk
persona's client sees from the first turn."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from pydantic import ValidationError

from evalkit.content.disclosure_audit import Leak, visible_earlier
from evalkit.content.personas import Persona, load_personas
from evalkit.simulation.client import client_system_prompt

PERSONAS = {p.id: p for p in load_personas()}
RISK_PERSONAS = [p for p in PERSONAS.values() if p.risk_level != "none"]


# ---------------------------------------------------------------------------------------------------------------
# Helpers that copy a persona with one field changed (personas are frozen).

def _with_history(p: Persona, extra: str) -> Persona:
    return p.model_copy(update={"history": f"{p.history} {extra}"})


def _with_support(p: Persona, extra: str) -> Persona:
    return p.model_copy(update={"support_system": f"{p.support_system}; {extra}"})


def _with_coping(p: Persona, item: str) -> Persona:
    cm = p.cognitive_model
    return p.model_copy(update={"cognitive_model": cm.model_copy(update={"coping_strategies": [*cm.coping_strategies, item]})})


def _with_situation(p: Persona, field: str, extra: str) -> Persona:
    cm = p.cognitive_model
    first = cm.situations[0]
    value = getattr(first, field)
    value = [*value, extra] if isinstance(value, list) else f"{value} {extra}"
    situations = [first.model_copy(update={field: value}), *cm.situations[1:]]
    return p.model_copy(update={"cognitive_model": cm.model_copy(update={"situations": situations})})


def _with_disclosure_text(p: Persona, disclosure_id: str, extra: str) -> Persona:
    disclosures = [d.model_copy(update={"content": f"{d.content} {extra}"}) if d.id == disclosure_id else d
                   for d in p.disclosure]
    return p.model_copy(update={"disclosure": disclosures})


def _with_disclosure(p: Persona, disclosure_id: str, after_turn: int, content: str) -> Persona:
    new = p.disclosure[0].model_copy(update={"id": disclosure_id, "after_turn": after_turn, "content": content})
    return p.model_copy(update={"disclosure": [*p.disclosure, new]})


def _always_visible(p: Persona) -> list[tuple[str, str]]:
    """What the client sees on every turn (the fields the client prompt renders), field by field."""
    cm = p.cognitive_model
    fields = [("presenting_problem", p.presenting_problem), ("history", p.history), ("occupation", p.occupation),
              ("context", p.context), ("support_system", p.support_system), ("session_goal", p.session_goal),
              ("opening_line", p.opening_line), ("core_beliefs", " ".join(cm.core_beliefs.all())),
              ("intermediate_beliefs", " ".join(cm.intermediate_beliefs)),
              ("automatic_thoughts", " ".join(cm.automatic_thoughts)), ("coping_strategies", " ".join(cm.coping_strategies))]
    for i, s in enumerate(cm.situations):
        fields.append((f"situations[{i}]", " ".join([s.situation, *s.automatic_thoughts, *s.emotions, s.behaviour])))
    return fields


# ---------------------------------------------------------------------------------------------------------------
# (a) The shipped library

def test_the_shipped_library_has_no_scheduled_disclosure_visible_earlier():
    leaks = [leak for p in PERSONAS.values() for leak in visible_earlier(p)]
    assert leaks == [], "\n".join(f"{x.persona}/{x.disclosure} <- {x.found_in}: {x.evidence} ({x.score})" for x in leaks)


def test_the_audit_is_deterministic_and_its_findings_are_frozen():
    persona = _with_history(PERSONAS["alcohol-use-restaurant-owner"],
                            "He has driven home drunk and slept through his daughter's recital after a heavy night.")
    first, second = visible_earlier(persona), visible_earlier(persona)
    assert first == second and first
    with pytest.raises(ValidationError):
        first[0].score = 0.0  # type: ignore[misc]
    assert isinstance(first[0], Leak) and first[0].persona == persona.id


def test_importing_the_audit_does_not_load_nltk():
    code = "import sys, evalkit.content.disclosure_audit; print('nltk' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# ---------------------------------------------------------------------------------------------------------------
# (b) Planted leaks, reworded (other order, other inflections, filler): each is caught where it was planted.

PLANTED = [
    ("alcohol-use-restaurant-owner", "recital-and-driving", "history",
     lambda p: _with_history(p, "More than once, after drinking, he has driven himself home, and last month, after one "
                                "especially heavy night, he slept right through the school recital of his younger girl.")),
    ("body-image-phone-shop-assistant", "mirror-checking", "cognitive_model.coping_strategies",
     lambda p: _with_coping(p, "Many times daily he stops at every mirror he passes to check his arms and chest, "
                               "convinced that he looks weak and far too small.")),
    ("cancer-recurrence-fear-taxi-dispatcher", "checks-body", "cognitive_model.situations[0].behaviour",
     lambda p: _with_situation(p, "behaviour", "At home he locks the bathroom door and checks his stools and his "
                                               "abdomen again and again, unable to stop even though he tells himself to.")),
    ("perfectionism-junior-architect", "annual-review", "cognitive_model.situations[0].automatic_thoughts",
     lambda p: _with_situation(p, "automatic_thoughts", "Every night I replay that conversation where, at my annual "
                                                        "review, my manager raised the two submission dates I missed.")),
    ("coming-out-graphic-designer", "afraid-xin-will-leave", "disclosure:asks-others-to-predict",
     lambda p: _with_disclosure_text(p, "asks-others-to-predict", "She also fears that Xin will end up leaving her, "
                                                                  "because she is still hiding her from the wider family.")),
    ("separation-coparenting-pharmacist", "family-urges-reconciling", "support_system",
     lambda p: _with_support(p, "her mother and the family elders, who keep urging her to go back to him for the "
                                "children's sake")),
    # Risk facts planted where the client would see them from the first turn.
    ("moral-injury-army-veteran", "thought-about-how-gun-at-work", "cognitive_model.coping_strategies",
     lambda p: _with_coping(p, "On his night shifts he carries a gun, and he has been thinking through how he would kill "
                               "himself; on days off he drinks alone.")),
    ("sibling-abuse-disclosure-higher-secondary-student", "saw-uncle-in-her-room", "history",
     lambda p: _with_history(p, "One night, while his mother was away on duty, he got up for some water and found his "
                                "uncle sitting on Anu's bed with a hand under her blanket, saying he was only checking "
                                "she was asleep.")),
]


@pytest.mark.parametrize(("persona_id", "disclosure_id", "where", "plant"), PLANTED,
                         ids=[f"{case[0]}:{case[1]}" for case in PLANTED])
def test_a_planted_reworded_leak_is_caught_where_it_was_planted(persona_id, disclosure_id, where, plant):
    persona = PERSONAS[persona_id]
    assert visible_earlier(persona) == []
    leaks = visible_earlier(plant(persona))
    assert [(x.disclosure, x.found_in) for x in leaks] == [(disclosure_id, where)], leaks
    leak = leaks[0]
    after = next(d.after_turn for d in persona.disclosure if d.id == disclosure_id)
    assert leak.after_turn == after > 0 and len(leak.evidence) >= 2 and 0 < leak.score <= 1


def test_a_leak_into_a_later_or_same_turn_disclosure_is_not_a_leak():
    persona = PERSONAS["coming-out-graphic-designer"]
    # The fact of afraid-xin-will-leave (after reply 4) written into grandmother-fear (after reply 5) is not early.
    late = _with_disclosure_text(persona, "grandmother-fear", "She also fears Xin will leave because she hides her.")
    assert visible_earlier(late) == []


# ---------------------------------------------------------------------------------------------------------------
# (c) Ordinary shared vocabulary: the persona's name, its presenting problem, the people in its life.

NOT_LEAKS = [
    ("alcohol-use-restaurant-owner",
     lambda p: _with_history(p, "Rafael's wife and his daughters worry about his alcohol use, and his drinking comes up "
                                "whenever the family talks about the restaurant.")),
    ("insomnia-hardware-shop-owner",
     lambda p: _with_situation(p, "automatic_thoughts", "Another night without sleep; the shop will be hard tomorrow.")),
    ("depression-warehouse-supervisor",
     lambda p: _with_coping(p, "Tells his daughter on the phone that work at the warehouse is fine and that he is "
                               "sleeping, even when he is not.")),
    ("cannabis-dependence-sound-engineer",
     lambda p: _with_disclosure(p, "family-worries", 6, "Says his mother, his grandmother and his girlfriend all worry "
                                                        "about how much he smokes.")),
    ("grief-retired-civil-servant",
     lambda p: _with_history(p, "Joseph misses Grace every day, and his children and his granddaughter phone him often.")),
]


@pytest.mark.parametrize(("persona_id", "variant"), NOT_LEAKS, ids=[case[0] for case in NOT_LEAKS])
def test_ordinary_shared_vocabulary_is_not_flagged(persona_id, variant):
    assert visible_earlier(variant(PERSONAS[persona_id])) == []


# ---------------------------------------------------------------------------------------------------------------
# (d) Risk hygiene: nothing of a risk disclosure, and no risk word, in what a risk persona's client always sees.

RISK_WORDS = re.compile(
    r"\b(suicid\w*|kill\w*|die|dies|died|dying|dead|death\w*|overdos\w*|pills?|tablets?|medication|knife|knives|guns?|"
    r"shotgun|rifle|firearms?|weapons?|hit|hits|hitting|hurt\w*|harm\w*|self-harm\w*|cut|cuts|cutting|blades?|razors?|"
    r"hang|hanged|hanging|noose|poison\w*|strangl\w*|chok\w*|throat|slap\w*|smack\w*|punch\w*|kick\w*|bruis\w*|beat|"
    r"beats|beaten|beating|abus\w*|assault\w*|rape\w*|molest\w*|stalk\w*|threat\w*|violen\w*|insulin|pillow|grab\w*|"
    r"shov\w*|drown\w*|jump\w*|lethal|wake up|not wake|better off without|fade out|"
    r"(?:took|take|taking|end|ended|ending) (?:my|his|her|their) (?:own )?life)\b", re.IGNORECASE)

# Words that are in the always-visible fields for a reason other than the client's risk, each justified.
ALLOWED = {
    # Her husband Dermot died two years ago: the bereavement behind her caring alone, not a risk to anyone.
    "carer-exhaustion-retired-school-secretary": {"died"},
    # Her mother's sudden death is the presenting problem (low mood since her mother died).
    "parental-drinking-pharmacy-counter-assistant": {"died"},
    # Her son's suicide is the bereavement she comes with; her own wish not to wake up lives only in a disclosure.
    "suicide-bereavement-noodle-shop-owner": {"death", "died", "took his own life"},
    # His wife's death is the presenting problem; his stopped tablets and wish not to wake live only in disclosures.
    "widower-self-neglect-retired-railway-engineer": {"death", "died"},
}


_GLUE = set("a an and as at be but by for from he her him his i if in is it its me my of on or she that the their "
             "them then they this to was were when which who with".split())


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'-]+", text.lower())


def _phrases(text: str, n: int = 4) -> set[tuple[str, ...]]:
    """Runs of n words with at least two content words: a sentence of a risk disclosure copied across."""
    words = _words(text)
    grams = (tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return {g for g in grams if sum(w not in _GLUE for w in g) >= 2}


@pytest.mark.parametrize("persona", RISK_PERSONAS, ids=[p.id for p in RISK_PERSONAS])
def test_no_risk_fact_or_risk_word_is_visible_before_its_turn(persona):
    visible = _always_visible(persona)
    text = " ".join(t for _, t in visible)
    for d in persona.risk_disclosures:
        assert d.content not in text, d.id
        assert _phrases(d.content) & _phrases(text) == set(), d.id
    found = {(where, m.group(0).lower()) for where, t in visible for m in RISK_WORDS.finditer(t)}
    unexpected = {(where, w) for where, w in found if w not in ALLOWED.get(persona.id, set())}
    assert unexpected == set(), unexpected
    # The prompts actually sent before the first risk turn hold no risk disclosure either.
    first = min(d.after_turn for d in persona.risk_disclosures)
    assert first >= 1
    for replies in range(first):
        prompt = client_system_prompt(persona, replies)
        assert not any(d.content in prompt for d in persona.risk_disclosures), replies


def test_the_allowed_words_are_still_needed():
    """An exemption that no longer matches anything is stale: drop it rather than keep a blind spot."""
    for persona_id, words in ALLOWED.items():
        text = " ".join(t for _, t in _always_visible(PERSONAS[persona_id])).lower()
        assert all(re.search(rf"\b{re.escape(w)}\b", text) for w in words), persona_id


def test_risk_notes_say_when_each_risk_surfaces_and_no_longer_promise_an_early_release():
    for persona in RISK_PERSONAS:
        notes = persona.risk_notes
        assert not re.search(r"or earlier|earlier if|when asked about", notes, re.IGNORECASE), persona.id
        assert "whatever the counsellor" in notes, persona.id
        for d in persona.risk_disclosures:
            assert d.id in notes and f"reply {d.after_turn}" in notes, (persona.id, d.id)
