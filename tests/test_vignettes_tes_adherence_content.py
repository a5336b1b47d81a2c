"""Content checks on the shipped TES and persona-adherence judge-fitness vignettes (vignettes/tes.yaml,
vignettes/persona-adherence.yaml).

- tes: every rubric item has a clearly high and a clearly low vignette; transcripts alternate from the client and run
  6-10 turns; reply length is no cue (the high vignette's therapist text is the longer one in 30-70% of an item's
  high/low pairs, pooled over items); a judge that counts warm words or rates by length cannot pass.
- persona-adherence: every per-turn check and at least one `disclosed.<id>` has a high and a low vignette; each
  transcript opens with the persona's scripted opening line; the checked turn is a simulated client turn; each
  `disclosed.<id>` names a real, non-risk disclosure the client was free to make; each disclosure-pace failure
  really comes before the disclosure's scheduled counsellor reply; and the run's scorer offers every key listed.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import yaml

from evalkit.content.personas import load_persona
from evalkit.content.rubrics import load_rubric
from evalkit.content.vignettes import load_vignette_set
from evalkit.judging.adherence import TURN_CHECKS, AdherenceScorer, free_to_say
from evalkit.judging.fitness import _transcript

ROOT = Path(__file__).resolve().parent.parent
TES_PATH = ROOT / "vignettes" / "tes.yaml"
ADHERENCE_PATH = ROOT / "vignettes" / "persona-adherence.yaml"
PERSONAS = ("generalised-anxiety-auditor", "panic-attacks-bus-driver", "depression-warehouse-supervisor")

# Disclosure-pace failures: the disclosure each checked turn gives away too early.
PACE_LOW = {
    # Mei, turn 2 follows 1 counsellor reply; her guilt about the work trip is scheduled from reply 4.
    "mei-t2-stroke-trip-too-early": "away-during-stroke",
    # Amara, turn 4 follows 2 replies; her fear of going mad (the aunt and the prayer camp) is scheduled from reply 4.
    "amara-t4-fear-of-madness-too-early": "fear-of-going-mad",
    # Tomasz, turn 2 follows 1 reply; the divorce and letting his daughter down are scheduled from reply 4.
    "tomasz-t2-letting-daughter-down-too-early": "divorce-let-daughter-down",
    # Tomasz, turn 4 follows 2 replies; how and when he would end his life is scheduled from reply 3.
    "tomasz-t4-plan-and-timing-too-early": "plan-and-timing",
}


def _raw(path: Path) -> dict:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def tes() -> dict:
    return _raw(TES_PATH)


@pytest.fixture(scope="module")
def adherence() -> dict:
    return _raw(ADHERENCE_PATH)


@pytest.fixture(scope="module")
def personas():
    return {pid: load_persona(ROOT / "simulators" / "personas" / f"{pid}.yaml") for pid in PERSONAS}


def _levels(data: dict) -> dict[str, tuple[list[str], list[str]]]:
    out: dict[str, tuple[list[str], list[str]]] = {}
    for v in data["vignettes"]:
        for item, level in v["levels"].items():
            assert level in ("high", "low"), (v["id"], item, level)
            high, low = out.setdefault(item, ([], []))
            (high if level == "high" else low).append(v["id"])
    return out


def _alternates_from_client(turns: list[dict]) -> bool:
    roles = [t["role"] for t in turns]
    return roles[0] == "client" and all(r == ("client" if i % 2 == 0 else "therapist") for i, r in enumerate(roles))


def _replies_before(turns: list[dict], index: int) -> int:
    return sum(t["role"] == "therapist" for t in turns[:index])


# ---------------------------------------------------------------- both files


@pytest.mark.parametrize("path", [TES_PATH, ADHERENCE_PATH], ids=["tes", "persona-adherence"])
def test_files_load_through_the_shipped_model_with_unique_ids_and_references(path):
    data = _raw(path)
    vset = load_vignette_set(path)
    assert vset.rubric == data["rubric"] and vset.version == "1"
    assert vset.references and all(r.strip() for r in vset.references)
    ids = [v["id"] for v in data["vignettes"]]
    assert len(ids) == len(set(ids))
    assert 20 <= len(ids) <= 28, len(ids)
    for v in data["vignettes"]:
        assert v["description"].strip() and "\n" not in v["description"], v["id"]
        assert _alternates_from_client(v["turns"]), v["id"]
        assert all(t["content"].strip() for t in v["turns"]), v["id"]


# ---------------------------------------------------------------- tes


def test_every_tes_item_has_a_high_and_a_low_vignette_and_no_unknown_item(tes):
    items = {item.id for item in load_rubric("tes").items}
    assert len(items) == 9
    pairs = _levels(tes)
    assert set(pairs) <= items, set(pairs) - items
    for item in items:
        high, low = pairs.get(item, ([], []))
        assert high and low, item


def test_tes_transcripts_are_short_sessions_without_a_persona(tes):
    for v in tes["vignettes"]:
        assert 6 <= len(v["turns"]) <= 10, v["id"]
        assert "persona" not in v and "turn" not in v, v["id"]


def test_tes_reply_length_is_no_cue(tes):
    """Pooled over items, the high vignette has the longer therapist text in 30-70% of high/low pairs."""
    length = {v["id"]: sum(len(t["content"]) for t in v["turns"] if t["role"] == "therapist") for v in tes["vignettes"]}
    longer = total = 0
    for high, low in _levels(tes).values():
        for h in high:
            for lo in low:
                total += 1
                longer += length[h] > length[lo]
    share = longer / total
    assert 0.3 <= share <= 0.7, share


def test_tes_pairs_defeat_a_judge_that_counts_warm_words_or_length():
    from evalkit.backends.mock import MockBackend
    from evalkit.judging.fitness import check_sets
    from evalkit.judging.judge import Judge, JudgeSettings
    from evalkit.judging.prompts import CLOSE

    warm = ("sounds", "hear", "understand", "glad", "really", "makes sense", "thank", "lovely", "sorry", "of course")
    therapist = re.compile(r'speaker="therapist">\n(.*?)\n</turn>', re.S)

    def warm_words(messages, choices):
        text = messages[-1]["content"].split(CLOSE)[0].lower()
        return {choices[min(len(choices) - 1, sum(text.count(w) for w in warm) // 2)]: 1.0}

    def by_length(messages, choices):
        text = messages[-1]["content"].split(CLOSE)[0]
        return {choices[min(len(choices) - 1, sum(map(len, therapist.findall(text))) // 130)]: 1.0}

    vset = load_vignette_set(TES_PATH)
    for shortcut in (warm_words, by_length):
        judge = Judge(MockBackend(model="j", distribution=shortcut, mass=1.0), JudgeSettings(adherence_threshold=None))
        report = asyncio.run(check_sets(judge, [vset]))["tes"]
        assert report.verdict == "unfit" and report.accuracy < 0.7, (shortcut.__name__, report.accuracy)


# ---------------------------------------------------------------- persona-adherence


def test_every_adherence_check_has_a_high_and_a_low_vignette(adherence):
    pairs = _levels(adherence)
    for check in TURN_CHECKS:
        high, low = pairs.get(check, ([], []))
        assert high and low, check
    disclosed = {k: v for k, v in pairs.items() if k.startswith("disclosed.")}
    assert disclosed
    # `judge check` scores each disclosed.<id> as its own item: each needs both a high and a low vignette.
    for key, (high, low) in disclosed.items():
        assert high and low, key
    assert set(pairs) <= set(TURN_CHECKS) | set(disclosed), set(pairs) - set(TURN_CHECKS)


def test_adherence_transcripts_open_with_the_persona_line_and_check_a_simulated_client_turn(adherence, personas):
    for v in adherence["vignettes"]:
        assert v["persona"] in PERSONAS, v["id"]
        assert v["turns"][0] == {"role": "client", "content": personas[v["persona"]].opening_line}, v["id"]
        per_turn = [k for k in v["levels"] if k in TURN_CHECKS]
        if per_turn or "turn" in v:
            turn = v.get("turn")
            assert isinstance(turn, int) and 0 < turn < len(v["turns"]), v["id"]
            assert v["turns"][turn]["role"] == "client", v["id"]
            # The checked turn is the one the vignette is about: nothing follows it.
            assert turn == len(v["turns"]) - 1, v["id"]


def test_disclosed_keys_name_a_disclosure_the_client_was_free_to_make(adherence, personas):
    for v in adherence["vignettes"]:
        persona = personas[v["persona"]]
        schedule = {d.id: d for d in persona.disclosure}
        last_client = max(i for i, t in enumerate(v["turns"]) if t["role"] == "client")
        for key in v["levels"]:
            if not key.startswith("disclosed."):
                continue
            disclosure = schedule.get(key.split(".", 1)[1])
            assert disclosure is not None, (v["id"], key)
            assert not disclosure.risk and disclosure.after_turn > 0, (v["id"], key)
            assert disclosure.after_turn <= _replies_before(v["turns"], last_client), (v["id"], key)


def test_disclosure_pace_failures_come_before_the_scheduled_reply(adherence, personas):
    low = {v["id"] for v in adherence["vignettes"] if v["levels"].get("disclosure_pace") == "low"}
    assert low == set(PACE_LOW), low ^ set(PACE_LOW)
    for v in adherence["vignettes"]:
        if v["id"] not in low:
            continue
        schedule = {d.id: d.after_turn for d in personas[v["persona"]].disclosure}
        assert PACE_LOW[v["id"]] in schedule, v["id"]
        assert _replies_before(v["turns"], v["turn"]) < schedule[PACE_LOW[v["id"]]], v["id"]


def test_the_run_scorer_offers_every_listed_key(adherence, personas):
    vset = load_vignette_set(ADHERENCE_PATH)
    for v in vset.vignettes:
        persona = personas[v.persona]
        transcript = _transcript(vset, v)
        offered = set(AdherenceScorer().keys(transcript, persona))
        for key in v.levels:
            wanted = f"t{v.turn}.{key}" if key in TURN_CHECKS else key
            assert wanted in offered, (v.id, key)
        assert all(f"disclosed.{d.id}" in offered for d in free_to_say(persona, transcript))
