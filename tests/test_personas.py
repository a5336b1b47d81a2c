"""The persona library, the client prompt, and what a simulated client may say when.

The prompt tests check the prompts actually sent to the client backend (the mock records every request),
not a re-rendering of the template.
"""

import re
from collections import Counter
from typing import get_args

import pytest

from evalkit.content.coverage import load_coverage_spec, shortfalls, suite_schedule_problems
from evalkit.content.personas import RiskType, load_personas, load_utterances
from evalkit.content.suites import available_suites, load_suite, schedule_problems
from evalkit.simulation.client import clean_client_reply, client_behaviour, client_messages, therapist_messages
from evalkit.store.records import Turn

from .conftest import run_cli

# Words that name a risk; none may appear in what a risk persona's client sees on every turn.
RISK_WORDS = re.compile(r"suicid|kill (my|him|her|them)sel|end (my|his|her|their) life|better off (without|dead)|"
                        r"self-harm|self harm|overdose|stockpil|\bnoose\b|\bhang(ing)? (my|him|her)self", re.IGNORECASE)


def test_persona_library_is_large_enough_and_varied():
    personas = load_personas()
    assert len(personas) >= 69
    assert len({p.presenting_problem for p in personas}) >= 12
    assert len(Counter(p.conversational_style for p in personas)) == 6
    assert {p.openness for p in personas} == {"low", "moderate", "high"}
    risk_types = Counter(p.risk_type for p in personas if p.risk_level != "none")
    assert set(risk_types) == set(get_args(RiskType)) - {"none"}
    assert all(risk_types[t] >= 3 for t in ("harm-to-others", "child-protection", "self-neglect"))


def test_every_archetype_style_cell_is_filled_and_declared():
    spec = load_coverage_spec()
    assert shortfalls(load_personas(), spec) == []
    assert [c.dimensions for c in spec.crossed] == [["archetype", "conversational_style"]]
    cells = Counter((p.archetype, p.conversational_style) for p in load_personas())
    assert all(cells[(a, s)] >= 1 for a in spec.cells["archetype"] for s in spec.cells["conversational_style"])


def test_utterances():
    utterances = load_utterances()
    assert len(utterances) >= 200
    assert len({u.topic for u in utterances}) >= 8
    assert {u.stage for u in utterances} == {"precontemplation", "contemplation", "preparation", "action", "maintenance"}


def test_every_builtin_suite_reaches_every_disclosure_risk_in_the_first_half():
    assert set(suite_schedule_problems()) == {s for s in available_suites() if load_suite(s).suite.unit == "session"}
    assert all(problems == [] for problems in suite_schedule_problems().values())
    # The check itself fails where it should: a 3-turn session cannot reach a disclosure after reply 4.
    persona = next(p for p in load_personas() if max(d.after_turn for d in p.disclosure) >= 4)
    assert schedule_problems([persona], 3) and schedule_problems([persona], 6) == []


def test_risk_facts_live_only_in_risk_disclosures():
    for persona in (p for p in load_personas() if p.risk_level != "none"):
        assert persona.risk_disclosures, persona.id
        always = client_messages(persona, [Turn(role="client", content=persona.opening_line)])[0]["content"]
        for disclosure in persona.risk_disclosures:
            assert disclosure.content not in always, (persona.id, disclosure.id)
        assert not RISK_WORDS.search(always), (persona.id, RISK_WORDS.search(always))
        assert persona.risk_notes not in always


def _session(persona, replies: list[str]) -> list[Turn]:
    turns = [Turn(role="client", content=persona.opening_line)]
    for reply in replies:
        turns += [Turn(role="therapist", content=reply), Turn(role="client", content="Mm.")]
    return turns[:-1]


def test_client_prompt_shows_the_person_and_only_eligible_disclosures():
    persona = next(p for p in load_personas() if p.id == "depression-warehouse-supervisor")
    neutral = ["I'm glad you came.", "What was today like?", "Go on.", "I see.", "And then?"]
    by_turn = {n: client_messages(persona, _session(persona, neutral[:n]))[0]["content"] for n in range(1, 6)}
    behaviour = client_behaviour()
    for text in by_turn.values():
        for shown in (persona.age_band, persona.gender, persona.occupation, persona.context, persona.support_system,
                      persona.session_goal, behaviour.archetypes[persona.archetype], behaviour.styles[persona.conversational_style]):
            assert shown.strip() in text
        assert persona.cognitive_model.situations[0].situation in text
        assert persona.risk_notes.strip() not in text
    for disclosure in persona.disclosure:
        for n, text in by_turn.items():
            assert (disclosure.content in text) == (disclosure.after_turn <= n), (disclosure.id, n)
    # Asking about a topic releases nothing early: the schedule is the persona's.
    asked = client_messages(persona, _session(persona, ["Have you had any thoughts of suicide? Do you have a plan?"]))[0]["content"]
    assert asked == by_turn[1]
    assert all(d.content not in asked for d in persona.disclosure if d.after_turn > 1)


# Wording that used to release disclosures early (former trigger words), and each word's plain synonym.
LOADED = {"safe": "okay", "plan": "idea", "hopeless": "stuck", "suicide": "ending", "kill yourself": "give up",
          "hurt yourself": "struggle", "drinking": "evenings", "hit": "touch", "gun": "thing", "pills": "things",
          "die": "rest", "danger": "trouble", "abuse": "conflict", "knife": "tool", "children": "family",
          "money": "bills", "eating": "meals", "medication": "routine", "partner": "person", "thoughts of dying": "low moods",
          "harm": "upset", "weapon": "object", "end your life": "stop it all", "better off dead": "better off away"}


def _therapists():
    loaded = [f"It's {w} to take your time here; what about {x}?" for w, x in zip(list(LOADED)[::2], list(LOADED)[1::2], strict=False)]
    plain = [f"It's {LOADED[w]} to take your time here; what about {LOADED[x]}?"
             for w, x in zip(list(LOADED)[::2], list(LOADED)[1::2], strict=False)]
    every_word = "Let me ask plainly about " + ", ".join(LOADED) + "."
    return {"loaded": loaded, "synonyms": plain, "every-word": [every_word] * 8, "silent": ["Mm."] * 8}


def test_every_therapist_meets_the_same_client_whatever_its_wording():
    """Sessions whose therapists differ only by wording (synonyms; every former trigger word in every reply; near
    silence) send the client identical instructions at every turn, for every persona: the prompts actually sent."""
    import asyncio

    from evalkit.backends.mock import MockBackend
    from evalkit.content.suites import Case
    from evalkit.core.types import SamplingParams
    from evalkit.simulation.client_modes import SimulatedClient
    from evalkit.simulation.engine import SessionEngine

    params = SamplingParams(max_tokens=64)

    async def client_prompts(persona, replies: list[str]) -> list[str]:
        client = MockBackend(model="client", replies=["I suppose so."])
        engine = SessionEngine(suite_id="t", system_prompt="be kind", turns=6, therapist=MockBackend(model="t", replies=replies),
                               client=SimulatedClient(client, params), therapist_sampling=params)
        await engine.run_case(Case(session_id=f"{persona.id}#0", replicate=0, persona=persona))
        return [call.messages[0]["content"] for call in client.calls]

    personas = load_personas()
    for persona in personas:
        sent = {name: asyncio.run(client_prompts(persona, replies)) for name, replies in _therapists().items()}
        reference = sent.pop("silent")
        assert len(reference) == 5
        for name, prompts in sent.items():
            assert prompts == reference, (persona.id, name)
        for replies, prompt in enumerate(reference, start=1):
            eligible = {d.id for d in persona.disclosure if d.content in prompt}
            assert eligible == {d.id for d in persona.disclosure if d.after_turn <= replies}, (persona.id, replies)


def test_a_risk_disclosure_is_voiced_at_its_turn_whatever_the_therapist_said():
    for persona in (p for p in load_personas() if p.risk_level != "none"):
        for replies in range(0, 8):
            prompt = client_messages(persona, _session(persona, ["Mm."] * replies) if replies else
                                     [Turn(role="client", content=persona.opening_line)])[0]["content"]
            due = [d for d in persona.risk_disclosures if d.after_turn == replies]
            assert ("Say this in your reply now" in prompt) == bool(due), (persona.id, replies)
            for d in due:
                assert prompt.index("Say this in your reply now") < prompt.index(d.content)


def test_roles_flip_for_the_client():
    persona = load_personas()[0]
    turns = [Turn(role="client", content=persona.opening_line), Turn(role="therapist", content="What brings you here?")]
    client_view = client_messages(persona, turns)
    assert [m["role"] for m in client_view] == ["system", "user", "assistant", "user"]
    assert client_view[-1]["content"] == "What brings you here?"
    therapist_view = therapist_messages("be kind", turns)
    assert [m["role"] for m in therapist_view] == ["system", "user", "assistant"]


def test_client_close_marker_and_labels():
    assert clean_client_reply("Client: thanks, that helped. [END]") == ("thanks, that helped.", True)
    assert clean_client_reply("I am not sure.") == ("I am not sure.", False)


def test_coverage_command_fails_when_a_cell_is_short(tmp_path):
    import shutil

    from evalkit.core.resources import simulators_dir

    keep = tmp_path / "few"
    keep.mkdir()
    for path in sorted((simulators_dir() / "personas").glob("*.yaml"))[:10]:
        shutil.copy(path, keep)
    ok = run_cli("personas", "--coverage")
    assert ok.code == 0 and "declared cells" in ok.output and "every disclosure reachable" in ok.output
    short = run_cli("personas", "--coverage", "--dir", keep)
    assert short.code == 1 and "coverage short" in short.output and "10 personas (need" in short.output


def test_safety_suite_and_risk_rubric_in_every_multi_turn_suite():
    loaded = load_suite("safety")
    assert len(loaded.personas) >= 21 and all(p.risk_level != "none" for p in loaded.personas)
    assert {p.risk_type for p in loaded.personas} == set(get_args(RiskType)) - {"none"}
    for suite_id in ("act-fm", "tes", "safety"):
        suite = load_suite(suite_id)
        assert suite.applies_to("safety") == "risk", suite_id
    assert "no_unconditional_secrecy" in [i.id for i in loaded.rubrics[0].critical_items]


@pytest.mark.parametrize("persona_id", ["self-harm-teenager-high-school-student", "domestic-abuse-hotel-housekeeper"])
def test_the_prompt_sent_at_turn_one_holds_no_risk_text_and_the_eligible_turn_does(persona_id, mocks, tmp_path):
    """Against the prompts the client backend actually received in a run whose therapist asks about risk at once."""
    import evalkit
    from evalkit.backends.mock import MockBackend

    persona = next(p for p in load_personas() if p.id == persona_id)
    suite = tmp_path / "one.yaml"
    suite.write_text(load_suite("tes").path.read_text().replace("personas: all", f"personas: [{persona_id}]"))
    therapist = MockBackend(model="asks", replies=["Are you safe? Are you thinking of suicide or of hurting yourself? Is anyone hurting you?"])
    evalkit.run(therapist, str(suite), client=mocks["client"], judge=mocks["judge"], out=tmp_path / "run", turns=6, report=False)
    prompts = [call.messages[0]["content"] for call in mocks["client"].calls if call.kind == "chat"]
    first_risk = min(d.after_turn for d in persona.risk_disclosures)
    assert len(prompts) == 5 and first_risk >= 1
    for number, prompt in enumerate(prompts, start=1):  # the client speaks after counsellor reply `number`
        for disclosure in persona.risk_disclosures:
            assert (disclosure.content in prompt) == (disclosure.after_turn <= number), (number, disclosure.id)
        assert not RISK_WORDS.search(prompt.split("## What you are ready to talk about now")[0]), number


def test_coverage_reports_a_scheduled_disclosure_written_into_the_history(tmp_path):
    import shutil

    import yaml

    from evalkit.core.resources import simulators_dir

    folder = tmp_path / "personas"
    shutil.copytree(simulators_dir() / "personas", folder)
    path = folder / "alcohol-use-restaurant-owner.yaml"
    data = yaml.safe_load(path.read_text())
    late = next(d for d in data["disclosure"] if d["after_turn"] >= 2 and not d.get("risk"))
    data["history"] += " " + late["content"].replace("Admits", "He has admitted").replace("Says", "He has said")
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    result = run_cli("personas", "--coverage", "--dir", folder)
    assert result.code == 1, result.output
    assert "already visible earlier" in result.output and f"{late['id']} visible in history" in result.output
