"""Disclosure pacing audit: is a scheduled disclosure's content already visible before its turn?

The simulated client sees its persona's always-visible fields (presenting problem, history, cognitive model and
situations, occupation, context, support system, session goal, opening line) from the first turn, and each
disclosure only once the counsellor has replied `after_turn` times. A fact scheduled for reply 3 that is also
written into the history can be said at reply 1, and the schedule no longer paces anything. `visible_earlier`
reports every disclosure with `after_turn > 0` whose distinctive content is already visible: in an always-visible
field or in a disclosure with a smaller `after_turn`.

What it measures. Texts are cut into units (a sentence of a long field, one list item, one part of a situation,
one earlier disclosure). Words are lower-cased; stop words, light verbs, time words and the stage directions
disclosures are written in ("admits", "says", "counsellor") are dropped (nltk's stopwords corpus is not installed
offline, so the list lives here); the rest are stemmed with nltk's Snowball stemmer, so "hides bottles" and "hidden
bottle" match. Each stem is weighted within the persona by log(units / units containing it): a word the persona
uses everywhere weighs little, a word found only in the disclosure and the sentence that gives it away weighs a
lot. The persona's name, the words of its presenting problem and stems in at least half of its disclosures weigh
nothing; kinship and cast words ("wife", "son", "friend") weigh half, since every story names its people. A
disclosure's score against a unit is the weighted share of its distinctive content found there. It is a leak when
the score reaches THRESHOLD, with at least MIN_SHARED distinctive stems in common whose weights add up to at least
MIN_WEIGHT (so two everyday words cannot make a leak of a short disclosure on their own).

Calibration. Before the library was cleaned, 314 scheduled disclosures in 69 personas were labelled by hand (197
leaks, 64 not, 53 partial). THRESHOLD was chosen by best F1 on half of the personas and checked on the other
half: on the clear cases precision 0.95 and recall 0.88 overall (held-out half 0.93 / 0.88; flagging everything
would give precision 0.75); counting the partial cases as leaks, precision 0.95 and recall 0.76.

Known limits. It matches words, not meaning: a paraphrase with no shared content word ("drinks most nights" versus
"rarely goes to bed sober") is missed, irregular forms do not stem together ("drove" / "driven"), and negation is
invisible ("sends money home" matches "stopped sending money home"). A leak split across units (half in the
history, half in a coping strategy) is judged unit by unit, and two rare incidental words can raise a false flag.
Treat a flag as "read these two texts side by side", and a clean result as "no shared wording", not as proof.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import cache
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    from evalkit.content.personas import Persona

THRESHOLD = 0.17   # weighted share of the disclosure's distinctive content found in one earlier unit
MIN_SHARED = 2     # distinctive stems in common
MIN_WEIGHT = 3.0   # their summed weight: at least one stem about as rare as 1 unit in 20
KIN_WEIGHT = 0.5   # weight factor for the people every story names

# A compact English stop list (nltk's stopwords corpus is not installed offline), plus the stage directions and
# hedges that disclosures are written in and that say nothing about the fact itself.
_STOP = set("""
a about above after again against all almost also am an and any are aren't as at be because been before being
below between both but by can cannot could couldn't did didn't do does doesn't doing don't down during each even
ever every few for from further get gets getting got had hadn't has hasn't have haven't having he he'd he'll he's
her here hers herself him himself his how i i'd i'll i'm i've if in into is isn't it it's its itself just let
lets like me more most much must my myself no nor not now of off on once one only or other our ours ourselves
out over own quite rather really same she she'd she'll she's should so some something still such than that
that's the their theirs them themselves then there these they they'd they'll they're this those though through
to too under until up upon us very was wasn't way we were what when where whether which while who whom why will
with within without won't would wouldn't yet you your yours yourself
say says said saying admit admits admitted admitting mention mentions mentioned describe describes described
explain explains explained reveal reveals revealed concede concedes confess confesses add adds added ask asks asked
asking counsellor therapist session directly calmly gently quietly briefly quickly
first later afterwards perhaps maybe sometimes often usually always never already again thing things lot kind
bit little way ways feel feels felt feeling one
last next ago day days week weeks month months year years today tonight yesterday time times
tell tells told telling make makes made go goes going went come comes coming came take takes took keep keeps kept
want wants wanted know knows knew think thinks thought nothing anything everything someone anyone everyone since
""".split())
# The people every client talks about: ordinary vocabulary that a disclosure and the history share without leaking.
_KIN = set("""
wife husband partner girlfriend boyfriend fiance fiancee spouse son sons daughter daughters child children kid kids
boy girl baby mother mum mom mama father dad papa parent parents brother brothers sister sisters family grandmother
grandfather grandson granddaughter grandchild grandchildren aunt uncle cousin friend friends colleague colleagues
""".split())
_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*|\d+")
_SPLIT = re.compile(r"(?<=[.!?;])\s+")


class Leak(BaseModel):
    """One scheduled disclosure whose distinctive content is already visible before its turn."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    persona: str
    disclosure: str
    after_turn: int
    found_in: str  # an always-visible field ("history", "cognitive_model.situations[0].behaviour") or "disclosure:<id>"
    evidence: tuple[str, ...]  # the shared words, as written in the disclosure
    score: float


@cache
def _stemmer():
    from nltk.stem.snowball import SnowballStemmer  # nltk pulls in scipy and pandas: only when an audit runs

    return SnowballStemmer("english")


def _terms(text: str) -> dict[str, str]:
    """Distinctive stems of a text -> the first word that produced each."""
    terms: dict[str, str] = {}
    for word in _WORD.findall(text.lower().replace("\u2019", "'")):
        word = word.removesuffix("'s")
        if len(word) > 2 and word not in _STOP:
            terms.setdefault(_stemmer().stem(word), word)
    return terms


def _visible_units(persona: Persona) -> list[tuple[str, str]]:
    """(where, text) for everything the client sees on every turn, long fields cut into sentences."""
    cm = persona.cognitive_model
    fields = [("presenting_problem", persona.presenting_problem), ("history", persona.history),
              ("occupation", persona.occupation), ("context", persona.context),
              ("support_system", persona.support_system), ("session_goal", persona.session_goal),
              ("opening_line", persona.opening_line)]
    fields += [(f"cognitive_model.core_beliefs.{kind}", b) for kind, bs in cm.core_beliefs.by_type().items() for b in bs]
    fields += [("cognitive_model.intermediate_beliefs", b) for b in cm.intermediate_beliefs]
    fields += [("cognitive_model.automatic_thoughts", t) for t in cm.automatic_thoughts]
    fields += [("cognitive_model.coping_strategies", c) for c in cm.coping_strategies]
    for i, s in enumerate(cm.situations):
        fields += [(f"cognitive_model.situations[{i}].situation", s.situation),
                   (f"cognitive_model.situations[{i}].automatic_thoughts", " ".join(s.automatic_thoughts)),
                   (f"cognitive_model.situations[{i}].emotions", " ".join(s.emotions)),
                   (f"cognitive_model.situations[{i}].behaviour", s.behaviour)]
    return [(where, part) for where, text in fields for part in _SPLIT.split(text) if part.strip()]


def visible_earlier(persona: Persona) -> list[Leak]:
    """Every disclosure with after_turn > 0 whose distinctive content is visible earlier: in an always-visible
    field or in a disclosure with a smaller after_turn. At most one leak per disclosure and place, best first."""
    visible = [(where, _terms(text)) for where, text in _visible_units(persona)]
    disclosures = [(d, _terms(d.content)) for d in persona.disclosure]
    units = [t for _, t in visible] + [t for _, t in disclosures]
    df = Counter(stem for terms in units for stem in terms)
    generic = set(_terms(f"{persona.name} {persona.presenting_problem}"))
    if len(disclosures) >= 3:
        generic |= {s for s in df if sum(s in t for _, t in disclosures) * 2 >= len(disclosures)}

    kin = {_stemmer().stem(w) for w in _KIN}

    def weight(stem: str) -> float:
        return 0.0 if stem in generic else math.log(len(units) / df[stem]) * (KIN_WEIGHT if stem in kin else 1.0)

    leaks: list[Leak] = []
    for d, terms in disclosures:
        if d.after_turn == 0:
            continue
        total = sum(weight(s) for s in terms)
        earlier = visible + [(f"disclosure:{e.id}", t) for e, t in disclosures if e.after_turn < d.after_turn]
        best: dict[str, Leak] = {}
        for where, unit in earlier:
            shared = [s for s in terms if s in unit and weight(s) > 0]
            found = sum(weight(s) for s in shared)
            score = found / total if total else 0.0
            if (len(shared) >= MIN_SHARED and found >= MIN_WEIGHT and score >= THRESHOLD
                    and score > getattr(best.get(where), "score", -1)):
                best[where] = Leak(persona=persona.id, disclosure=d.id, after_turn=d.after_turn, found_in=where,
                                   evidence=tuple(terms[s] for s in shared), score=round(score, 3))
        leaks += sorted(best.values(), key=lambda leak: -leak.score)
    return leaks
