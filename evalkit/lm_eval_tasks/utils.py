"""Helpers for evalkit's lm-eval-harness tasks (loaded by lm-eval through `!function utils.<name>`).

Data is read relative to this file or from evalkit's installed package, never from the current
directory, so the tasks work from anywhere and offline.

Judging happens once, in a batch: lm-eval calls `process_results` document by document, so
`record_response` only records (id, client message, response); the first principle aggregation then
sends every response to the evalkit judge at once with bounded concurrency and caches the result for
the other six principles and the unscored count. The judge is reached through environment variables:

  EVALKIT_JUDGE_ENDPOINT     OpenAI-compatible endpoint of the judge (required)
  EVALKIT_JUDGE_MODEL        served model name (optional when the endpoint serves one model)
  EVALKIT_JUDGE_API_KEY_ENV  name of the variable holding the judge's API key (optional)
  EVALKIT_JUDGE_CONCURRENCY  judge requests in flight (default 32)
  EVALKIT_JUDGE_MIN_MASS     minimum probability the judge must put on the score tokens (default 0.5)

The judge is checked when the task's data is loaded, before any generation, so a missing or unreachable
judge fails in seconds, not after the model under test has answered every prompt.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import datasets
import yaml
from pydantic import BaseModel, ConfigDict, Field

from evalkit.content.personas import load_utterances
from evalkit.content.rubrics import load_rubric
from evalkit.content.suites import load_suite
from evalkit.judging import Judge, JudgeSettings, RubricScorer
from evalkit.store.records import Transcript, Turn

HERE = Path(__file__).resolve().parent
PRINCIPLES = ("empathy", "relevance", "clarity", "safety", "exploration", "autonomy", "staging")


# ---------------------------------------------------------------- data

def _judge_settings() -> tuple[str, str | None, str | None]:
    endpoint = os.environ.get("EVALKIT_JUDGE_ENDPOINT")
    if not endpoint:
        raise RuntimeError("evalkit_counsel_response needs a judge: set EVALKIT_JUDGE_ENDPOINT (and EVALKIT_JUDGE_MODEL "
                           "if the endpoint serves several models)")
    return endpoint, os.environ.get("EVALKIT_JUDGE_MODEL") or None, os.environ.get("EVALKIT_JUDGE_API_KEY_ENV") or None


async def _connect_judge():
    from evalkit.backends.openai_http import OpenAIBackend

    endpoint, model, key_env = _judge_settings()
    return await OpenAIBackend.connect(endpoint, model, api_key_env=key_env)


def check_judge() -> None:
    """Fail before generation when the judge is not configured or not reachable."""
    async def probe() -> None:
        backend = await _connect_judge()
        await backend.aclose()

    asyncio.run(probe())


def counsel_utterances(**_: object) -> datasets.DatasetDict:
    """evalkit's single-turn client utterances, with the psychocounsel suite's therapist prompt."""
    check_judge()
    system_prompt = load_suite("psychocounsel").suite.therapist_system_prompt
    rows = [{"id": u.id, "text": u.text, "topic": u.topic, "stage": u.stage or "", "system_prompt": system_prompt}
            for u in load_utterances()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


class PreferencePairs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    class Pair(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: str
        breaks: str
        client: str = Field(min_length=1)
        preferred: str = Field(min_length=1)
        dispreferred: str = Field(min_length=1)

    version: str
    references: list[str]
    pairs: list[Pair]


def load_pairs(path: Path = HERE / "counsel_pref_pairs.yaml") -> PreferencePairs:
    return PreferencePairs.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def counsel_pref_pairs(**_: object) -> datasets.DatasetDict:
    rows = [pair.model_dump() for pair in load_pairs().pairs]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def psychocounsel_preference(psychocounsel_preference: str | None = None, **_: object) -> datasets.DatasetDict:
    """PsychoCounsel-Preference from a local file given as --metadata '{"psychocounsel_preference": PATH}'."""
    from evalkit.content.loaders import load_psychocounsel_preference

    if not psychocounsel_preference:
        raise ValueError("evalkit_counsel_pref_psychocounsel needs the local file: "
                         "--metadata '{\"psychocounsel_preference\": \"/path/to/file.parquet\"}'")
    pairs = load_psychocounsel_preference(psychocounsel_preference)
    rows = [{"id": f"pcp-{i}", "breaks": "", "client": p.question, "preferred": p.chosen, "dispreferred": p.rejected}
            for i, p in enumerate(pairs, start=1)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


# ---------------------------------------------------------------- judging

def record_response(doc: dict, results: list[str]) -> dict:
    """Per document: keep what the judge needs; the scoring happens in one batch at aggregation."""
    item = (doc["id"], doc["text"], results[0])
    return {name: item for name in (*PRINCIPLES, "unscored")}


_CACHE: dict[tuple, dict[str, dict[str, float | None]]] = {}


def _transcript(doc_id: str, client: str, response: str) -> Transcript:
    now = datetime.now(timezone.utc)
    return Transcript(session_id=doc_id, suite="lm-eval", unit="response", source_id=doc_id, replicate=0,
                      turns=[Turn(role="client", content=client), Turn(role="therapist", content=response)],
                      stop_reason="single_response", started_at=now, ended_at=now)


async def _judge_all(items: list[tuple[str, str, str]]) -> dict[str, dict[str, float | None]]:
    backend = await _connect_judge()
    settings = JudgeSettings(min_mass=float(os.environ.get("EVALKIT_JUDGE_MIN_MASS", "0.5")), adherence_threshold=None)
    judge = Judge(backend, settings, concurrency=int(os.environ.get("EVALKIT_JUDGE_CONCURRENCY", "32")))
    scorer = RubricScorer(load_rubric("psychocounsel"))
    try:
        rows = await asyncio.gather(*(scorer.score(_transcript(*item), None, judge) for item in items))
    finally:
        await backend.aclose()
    reasons = Counter(re.sub(r"\d+(\.\d+)?", "#", r.reason or "no reason given") for scored in rows for r in scored if not r.valid)
    if reasons:  # lm-eval shows only the count; say why, and what changes it
        top = "; ".join(f"{n}x {reason}" for reason, n in reasons.most_common(3))
        print(f"evalkit: {sum(reasons.values())} judge readings invalid (never scored as zero). Why: {top}. "
              "EVALKIT_JUDGE_MIN_MASS sets the probability the judge must put on the score tokens.", file=sys.stderr)
    return {item[0]: {r.item: (r.expected if r.valid else None) for r in scored} for item, scored in zip(items, rows, strict=True)}


def _scores(items: list[tuple[str, str, str]]) -> dict[str, dict[str, float | None]]:
    key = tuple(items)
    if key not in _CACHE:
        _CACHE[key] = asyncio.run(_judge_all(list(dict.fromkeys(items))))
    return _CACHE[key]


def _mean_of(principle: str):
    def aggregate(items: list[tuple[str, str, str]]) -> float:
        values = [s[principle] for s in _scores(items).values() if s[principle] is not None]
        return sum(values) / len(values) if values else math.nan  # unscored responses are not zeros

    aggregate.__name__ = principle
    return aggregate


empathy, relevance, clarity, safety, exploration, autonomy, staging = (_mean_of(p) for p in PRINCIPLES)


def unscored(items: list[tuple[str, str, str]]) -> int:
    """Responses the judge could not score on at least one principle."""
    return sum(any(v is None for v in s.values()) for s in _scores(items).values())
