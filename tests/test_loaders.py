"""Published-data loaders, on small files written here in the published schemas."""

import json

import pandas as pd
import pytest

from evalkit.content.loaders import PRINCIPLES, load_patient_psi, load_psychocounsel_preference
from evalkit.content.personas import load_personas, load_utterances
from evalkit.core.errors import ConfigError

from .conftest import assert_one_line_error, run_cli

PROFILE = {
    "name": "Sam", "id": "7-2", "type": ["plain", "reserved", "upset"],
    "history": "Grew up moving between relatives; recently lost a warehouse job.",
    "helpless_belief": ["I am powerless."], "unlovable_belief": [], "worthless_belief": ["I am worthless."],
    "intermediate_belief": "If I rely on people, they will let me down.",
    "coping_strategies": "Keeps to himself and works extra hours.",
    "situation": "Landlord called about late rent.", "auto_thought": "I can never get ahead.",
    "emotion": ["sad, down, lonely, unhappy"], "behavior": "Ignores further calls.",
}


def _pairs_frame(n=3):
    rows = []
    for i in range(n):
        row = {"question": f"I feel stuck at work ({i}).", "chosen": "That sounds hard; what feels most stuck?",
               "rejected": "Just quit.", "chosen_model": "m1", "rejected_model": "m2"}
        row.update({f"chosen_{p}": 5 for p in PRINCIPLES})
        row.update({f"rejected_{p}": 2 for p in PRINCIPLES})
        rows.append(row)
    rows.append(dict(rows[0]))  # the same question twice becomes one utterance
    return pd.DataFrame(rows)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_psychocounsel_preference_to_utterances(tmp_path, suffix):
    path = tmp_path / f"pcp{suffix}"
    frame = _pairs_frame()
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_json(path, orient="records", lines=True)
    pairs = load_psychocounsel_preference(path)
    assert len(pairs) == 4 and pairs[0].chosen_ratings == {p: 5 for p in PRINCIPLES}
    out = tmp_path / "imported" / "utterances.yaml"
    result = run_cli("import", "psychocounsel-preference", path, "--out", out)
    assert result.code == 0, result.output
    utterances = load_utterances(out)
    assert [u.text for u in utterances] == [f"I feel stuck at work ({i})." for i in range(3)]
    assert (tmp_path / "imported" / "utterances-pairs.jsonl").read_text().count("\n") == 4
    again = run_cli("import", "psychocounsel-preference", path, "--out", out)
    assert_one_line_error(again, "already exists")
    # Only the pairs file exists: nothing is written (no stray utterances YAML beside it).
    out.unlink()
    assert_one_line_error(run_cli("import", "psychocounsel-preference", path, "--out", out), "already exists")
    assert not out.exists()


def test_malformed_preference_row_names_row_and_column(tmp_path):
    frame = _pairs_frame()
    frame.loc[2, "rejected"] = "   "
    path = tmp_path / "bad.jsonl"
    frame.to_json(path, orient="records", lines=True)
    with pytest.raises(ConfigError, match=r"row 3: column 'rejected'"):
        load_psychocounsel_preference(path)
    frame.drop(columns=["question"]).to_json(path, orient="records", lines=True)
    assert_one_line_error(run_cli("import", "psychocounsel-preference", path, "--out", tmp_path / "u.yaml"),
                          str(path), "column 'question' is missing")


def test_patient_psi_profiles_to_personas(tmp_path):
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps([PROFILE, {**PROFILE, "id": "7-3", "type": ["verbose"]}]))
    personas = load_patient_psi(path)
    assert [p.conversational_style for p in personas] == ["plain", "guarded", "hostile", "verbose"]
    sam = personas[1]
    # The three belief types stay apart, and the situation chain is kept field by field.
    beliefs = sam.cognitive_model.core_beliefs
    assert (beliefs.helpless, beliefs.unlovable, beliefs.worthless) == (["I am powerless."], [], ["I am worthless."])
    (situation,) = sam.cognitive_model.situations
    assert (situation.situation, situation.automatic_thoughts, situation.emotions, situation.behaviour) == (
        PROFILE["situation"], [PROFILE["auto_thought"]], PROFILE["emotion"], PROFILE["behavior"])
    assert sam.openness == "low" and sam.archetype == "unspecified" and sam.act_profile.cognitive_fusion == "unrated"
    # ... and they reach the client prompt.
    from evalkit.simulation.client import client_messages
    from evalkit.store.records import Turn

    prompt = client_messages(sam, [Turn(role="client", content=sam.opening_line)])[0]["content"]
    assert "about being able to cope: I am powerless." in prompt and "about your worth: I am worthless." in prompt
    assert PROFILE["situation"] in prompt and PROFILE["behavior"][1:] in prompt
    out = tmp_path / "personas"
    result = run_cli("import", "patient-psi", path, "--out", out)
    assert result.code == 0, result.output
    assert [p.id for p in load_personas(out)] == sorted(p.id for p in personas)
    before = {p: p.read_bytes() for p in out.iterdir()}
    assert_one_line_error(run_cli("import", "patient-psi", path, "--out", out), "already exists")
    assert {p: p.read_bytes() for p in out.iterdir()} == before


def test_malformed_patient_psi_row_names_row_and_column(tmp_path):
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps([PROFILE, {**PROFILE, "id": "9-1", "type": ["shouty"]}]))
    assert_one_line_error(run_cli("import", "patient-psi", path, "--out", tmp_path / "p"),
                          str(path), "row 2 (id 9-1)", "column 'type'", "shouty")
    path.write_text(json.dumps([{k: v for k, v in PROFILE.items() if k != "auto_thought"}]))
    with pytest.raises(ConfigError, match=r"row 1 \(id 7-2\): column 'auto_thought'"):
        load_patient_psi(path)


def test_built_in_library_never_uses_the_import_placeholders():
    for p in load_personas():
        assert p.archetype != "unspecified" and p.age_band != "unknown"
        assert "unrated" not in p.act_profile.model_dump().values()
    assert all(u.stage is not None and u.risk is not None for u in load_utterances())
