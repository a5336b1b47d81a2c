"""The one rule that turns a judge's probabilities into a score, used by every judge call evalkit makes
(rubric items, persona adherence, risk surfaced, pairwise preference, the lm-eval aggregation).

- no probability on any allowed answer: invalid;
- the model itself put less than `min_mass` of its probability on the allowed answers: invalid. For an
  unconstrained judge that is the top-k mass on the score tokens; for a constrained judge (vLLM's choice
  constraint) it comes from an unconstrained twin request, so a judge that would rather have refused or
  abstained is visible and treated the same way. Read from a top-20 list, the mass is a lower bound (an
  answer below the 20th alternative counts 0), so a constrained judge's mass can read 0 while its exact
  distribution over the answers exists: that is too little mass for any positive minimum, and accepted
  only when the minimum is 0;
- otherwise valid, with the whole distribution and its expectation.
An invalid reading always carries its reason, is counted, and is never a zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from evalkit.core.types import ChoiceDistribution


@dataclass(frozen=True)
class Reading:
    valid: bool
    probs: dict[str, float] | None = None
    mass: float | None = None
    reason: str | None = None

    @property
    def expected(self) -> float | None:
        """The expected value when the choices are numbers (score levels)."""
        if not self.valid or not self.probs:
            return None
        return sum(float(level) * p for level, p in self.probs.items())

    @classmethod
    def invalid(cls, reason: str, mass: float | None = None) -> Reading:
        return cls(valid=False, mass=mass, reason=reason[:400])


def read_choice(dist: ChoiceDistribution, min_mass: float) -> Reading:
    if not dist.probs or sum(dist.probs.values()) <= 0:
        return Reading.invalid("the judge put no probability on any allowed answer", mass=dist.mass)
    if dist.mass is not None and dist.mass < min_mass:
        how = "before the choice constraint" if dist.constrained else "among its top alternatives"
        return Reading.invalid(f"the allowed answers carried only {dist.mass:.1%} of the judge's probability {how} "
                               f"(minimum {min_mass:.0%}): the judge would rather have answered something else",
                               mass=dist.mass)
    return Reading(valid=True, probs=dict(dist.probs), mass=dist.mass)
