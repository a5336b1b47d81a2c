"""The one rule that turns a judge's probabilities into a score, used by every judge call evalkit makes
(rubric items, persona adherence, risk surfaced, pairwise preference, the lm-eval aggregation).

A reading is one request: the judge's answer unconstrained, with the top logprobs of its first token. Folded onto
the allowed answers they give both the mass (how much probability the model itself put on the answers) and the
distribution over them: vLLM's choice constraint masks the other tokens before computing logprobs, so the
distribution a constrained request reports is exactly the unconstrained one renormalised over the answers. An
answer missing from the list carried at most the list's bound (`ChoiceDistribution.unlisted_below`), so the folded
distribution is off by at most `ChoiceDistribution.error` and the mass is a lower bound; both are recorded.

- the model itself put less than `min_mass` of its probability on the allowed answers (read from its top
  alternatives, a lower bound): invalid, so a judge that would rather have refused or abstained is visible. An
  invalid reading needs no exact distribution;
- no probability on any allowed answer: invalid;
- otherwise valid, with the whole distribution and its expectation. When an answer was missing from the list and
  what it could carry might move the distribution by more than `FOLD_TOLERANCE`, the judge asks once more,
  restricted to the answers (where the backend can), for the exact distribution (`needs_exact`).
An invalid reading always carries its reason, is counted, and is never a zero.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from evalkit.core.types import ChoiceDistribution

FOLD_TOLERANCE = 1e-3
"""The largest total-variation distance between a folded distribution and the exact one that a valid reading
accepts without a second, constrained request (it moves an expected 0-3 score by at most 0.003)."""


@dataclass(frozen=True)
class Reading:
    valid: bool
    probs: dict[str, float] | None = None
    mass: float | None = None
    reason: str | None = None
    unlisted: tuple[str, ...] | None = None
    """Allowed answers missing from the judge's top alternatives (None: not known, e.g. a scripted judge)."""
    unlisted_below: float | None = None
    """Each unlisted answer carried at most this probability: the mass lies in [mass, mass + n * unlisted_below]."""
    error: float | None = None
    """For a valid reading: how far (total variation) `probs` can be from the judge's exact distribution over the
    answers; 0 when every answer was read (listed, or a request restricted to the answers read them)."""

    @property
    def expected(self) -> float | None:
        """The expected value when the choices are numbers (score levels)."""
        if not self.valid or not self.probs:
            return None
        return sum(float(level) * p for level, p in self.probs.items())

    @classmethod
    def invalid(cls, reason: str, mass: float | None = None) -> Reading:
        return cls(valid=False, mass=mass, reason=reason[:400])


def needs_exact(dist: ChoiceDistribution, min_mass: float) -> bool:
    """Whether a reading folded from top logprobs should be read again restricted to the answers: only when it will
    be valid (its mass already passes the minimum), an answer was missing from the list, and what the missing
    answers could carry might move the distribution by more than FOLD_TOLERANCE."""
    if not dist.can_constrain or dist.constrained or dist.mass is None or dist.mass < min_mass:
        return False
    error = dist.error
    return error is None or error > FOLD_TOLERANCE


def with_exact(folded: ChoiceDistribution, exact: ChoiceDistribution) -> ChoiceDistribution:
    """A folded reading's mass and bounds with the exact distribution a constrained request read."""
    return replace(folded, probs=dict(exact.probs), constrained=True)


def read_choice(dist: ChoiceDistribution, min_mass: float) -> Reading:
    bounds = {"unlisted": dist.unlisted if dist.mass is not None else None, "unlisted_below": dist.unlisted_below}
    if dist.mass is not None and dist.mass < min_mass:
        how = "before the choice constraint" if dist.constrained or dist.can_constrain else "among its top alternatives"
        reason = (f"the allowed answers carried only {dist.mass:.1%} of the judge's probability {how} "
                  f"(minimum {min_mass:.0%}): the judge would rather have answered something else")
        return replace(Reading.invalid(reason, mass=dist.mass), **bounds)
    if not dist.probs or sum(dist.probs.values()) <= 0:
        return replace(Reading.invalid("the judge put no probability on any allowed answer", mass=dist.mass), **bounds)
    return Reading(valid=True, probs=dict(dist.probs), mass=dist.mass, error=dist.error, **bounds)
