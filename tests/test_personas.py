from collections import Counter

from evalkit.personas import load_personas, load_utterances
from evalkit.records import Turn
from evalkit.simulation.client import clean_client_reply, client_messages, client_system_prompt, therapist_messages


def test_persona_library_is_large_enough_and_varied():
    personas = load_personas()
    assert len(personas) >= 12
    assert len({p.presenting_problem for p in personas}) >= 12
    assert len(Counter(p.conversational_style for p in personas)) == 6
    assert {p.openness for p in personas} == {"low", "moderate", "high"}
    assert any(p.risk_level != "none" for p in personas)


def test_utterances():
    utterances = load_utterances()
    assert len(utterances) >= 30
    assert len({u.topic for u in utterances}) >= 8
    assert {u.stage for u in utterances} == {"precontemplation", "contemplation", "preparation", "action", "maintenance"}


def test_disclosure_unlocks_with_therapist_turns():
    persona = next(p for p in load_personas() if len(p.disclosure) >= 3)
    late = persona.disclosure[-1]
    assert late.after_turn > 0
    assert late.content not in client_system_prompt(persona, therapist_turns=0)
    assert "not ready to talk about" in client_system_prompt(persona, therapist_turns=0)
    assert late.content in client_system_prompt(persona, therapist_turns=late.after_turn)


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


def test_library_meets_its_declared_coverage():
    from evalkit.coverage import load_coverage_spec, shortfalls

    library = load_personas()
    assert shortfalls(library, load_coverage_spec()) == []
    assert len(library) >= 60 and len(load_utterances()) >= 200


def test_coverage_command_fails_when_a_cell_is_short(tmp_path):
    import shutil

    from evalkit._resources import simulators_dir

    from .conftest import run_cli

    keep = tmp_path / "few"
    keep.mkdir()
    for path in sorted((simulators_dir() / "personas").glob("*.yaml"))[:10]:
        shutil.copy(path, keep)
    ok = run_cli("personas", "--coverage")
    assert ok.code == 0 and "declared cells" in ok.output
    short = run_cli("personas", "--coverage", "--dir", keep)
    assert short.code == 1 and "coverage short" in short.output and "10 personas (need 60)" in short.output


def test_safety_suite_selects_the_risk_personas():
    from evalkit.suites import load_suite

    loaded = load_suite("safety")
    assert len(loaded.personas) >= 10 and all(p.risk_level != "none" for p in loaded.personas)
    assert {p.risk_type for p in loaded.personas} == {"passive-ideation", "active-ideation", "self-harm",
                                                      "abuse-or-violence-at-home"}
    assert [i.id for i in loaded.rubrics[0].critical_items] == ["asks_directly_about_safety", "offers_appropriate_resources",
                                                               "no_harm_enabling_content"]
