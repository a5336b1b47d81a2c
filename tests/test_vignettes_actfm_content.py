"""Content checks for the ACT-FM judge-fitness vignettes (vignettes/act-fm.yaml).

- every item of rubrics/act-fm.yaml has at least one vignette written high on it and one written low;
- every `levels` key is an item id of the rubric and every level is high or low;
- turns alternate starting with the client, 6-10 turns, each 1-4 sentences; vignette ids are unique;
- length is not a cue: over all (high, low) vignette pairs of every item, the share in which the high vignette's
  therapist text is longer than the low one's lies between 0.3 and 0.7 (a judge that prefers longer therapist
  turns cannot pass by length alone).
"""

from __future__ import annotations

import re
from itertools import product
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VIGNETTES = ROOT / "vignettes" / "act-fm.yaml"
RUBRIC = ROOT / "rubrics" / "act-fm.yaml"
LENGTH_CUE_BAND = (0.3, 0.7)
_SENTENCE_END = re.compile(r"[.!?]+(?:['\")]*)(?=\s|$)")


@pytest.fixture(scope="module")
def vset() -> dict:
    with VIGNETTES.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def item_ids() -> list[str]:
    with RUBRIC.open(encoding="utf-8") as handle:
        rubric = yaml.safe_load(handle)
    ids = [item["id"] for item in rubric["items"]]
    assert len(ids) == 25
    return ids


def _pairs(vset: dict) -> dict[str, tuple[list[dict], list[dict]]]:
    out: dict[str, tuple[list[dict], list[dict]]] = {}
    for vignette in vset["vignettes"]:
        for item, level in vignette["levels"].items():
            high, low = out.setdefault(item, ([], []))
            (high if level == "high" else low).append(vignette)
    return out


def _therapist_chars(vignette: dict) -> int:
    return sum(len(turn["content"]) for turn in vignette["turns"] if turn["role"] == "therapist")


def length_cue_share(vset: dict) -> tuple[float, int]:
    """Share of (high, low) pairs, pooled over items, where the high vignette's therapist text is longer (ties
    count half), and the number of pairs."""
    longer = 0.0
    total = 0
    for high, low in _pairs(vset).values():
        for h, lo in product(high, low):
            a, b = _therapist_chars(h), _therapist_chars(lo)
            longer += 1.0 if a > b else 0.5 if a == b else 0.0
            total += 1
    return longer / total, total


def test_header(vset):
    assert vset["rubric"] == "act-fm"
    assert isinstance(vset["version"], str) and vset["version"]
    assert vset["references"] and all(isinstance(r, str) and r for r in vset["references"])
    assert any("O'Neill" in r and "2019" in r for r in vset["references"])
    assert isinstance(vset["notes"], str) and vset["notes"].strip()
    assert set(vset) == {"rubric", "version", "references", "notes", "vignettes"}


def test_ids_unique_and_fields(vset):
    ids = [v["id"] for v in vset["vignettes"]]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for v in vset["vignettes"]:
        assert set(v) == {"id", "description", "turns", "levels"}, v["id"]
        assert re.fullmatch(r"[a-z0-9][a-z0-9_\-\.]*", v["id"]), v["id"]
        assert isinstance(v["description"], str) and v["description"].strip(), v["id"]


def test_levels_name_rubric_items(vset, item_ids):
    for v in vset["vignettes"]:
        assert v["levels"], v["id"]
        for item, level in v["levels"].items():
            assert item in item_ids, (v["id"], item)
            assert level in ("high", "low"), (v["id"], item, level)


def test_every_item_has_high_and_low(vset, item_ids):
    pairs = _pairs(vset)
    missing = [i for i in item_ids if not (pairs.get(i, ([], []))[0] and pairs.get(i, ([], []))[1])]
    assert not missing, f"items without both a high and a low vignette: {missing}"


def test_turns_alternate_from_client(vset):
    for v in vset["vignettes"]:
        roles = [t["role"] for t in v["turns"]]
        assert 6 <= len(roles) <= 10, (v["id"], len(roles))
        assert roles == [("client", "therapist")[i % 2] for i in range(len(roles))], v["id"]
        for turn in v["turns"]:
            assert set(turn) == {"role", "content"}, v["id"]
            text = turn["content"].strip()
            sentences = len(_SENTENCE_END.findall(text)) or 1
            assert text and sentences <= 4, (v["id"], text)


def test_length_is_not_a_cue(vset):
    share, total = length_cue_share(vset)
    print(f"\nact-fm vignettes: high vignette has longer therapist text in {share:.3f} of {total} (high, low) pairs")
    low, high = LENGTH_CUE_BAND
    assert low <= share <= high, f"length cue: high longer in {share:.3f} of {total} pairs (allowed {low}-{high})"


def test_loads_as_a_vignette_set():
    """The shipped loader (pydantic model) accepts the file and sees the same pairs."""
    from evalkit.content.vignettes import load_vignette_set

    loaded = load_vignette_set(VIGNETTES)
    assert loaded.rubric == "act-fm" and len(loaded.vignettes) >= 50
