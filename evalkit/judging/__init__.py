"""Judging: scorers that turn transcripts into score rows through one judge, one budget and one probability rule.

- `prompts`: how a transcript is shown (fenced data, turns no content can forge).
- `choice`: the rule from probabilities to a valid or invalid score.
- `judge`: the judge backend behind a concurrency budget.
- `scorer`: the Scorer protocol, the rubric scorer and the registry.
- `adherence`, `safety`, `formulation`: persona adherence, risk surfaced, case formulation.
- `pairwise`, `preference`, `validation`, `training`: pairwise preference, eval-pref, judge validate, judge train.
"""

from evalkit.judging.judge import Judge, JudgeSettings
from evalkit.judging.scorer import RubricScorer, Scorer, make_scorer, register_scorer

__all__ = ["Judge", "JudgeSettings", "RubricScorer", "Scorer", "make_scorer", "register_scorer"]
