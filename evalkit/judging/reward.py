"""A reward model as a scorer: each session or response gets the reward a vLLM-served reward model gives the
conversation (PsychoCounsel's way of scoring replies), next to the judge's rubrics.

The row's value is sigmoid(reward): for a Bradley-Terry reward model, the probability that the reply is preferred
to one of reward 0. It is monotone in the reward, so means, contrasts and gates rank models as the raw rewards
would, and it sits on a fixed 0-1 scale; the raw logit is kept in the row's reason. No LLM judge is asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from contextlib import AsyncExitStack

from evalkit.backends.reward import RewardClient, sigmoid, transcript_messages
from evalkit.core.errors import ConfigError, ContextLengthExceeded, RequestRejected
from evalkit.judging.choice import Reading
from evalkit.judging.judge import Judge
from evalkit.judging.scorer import Source, invalid_row, score_row
from evalkit.store.records import ItemScore, Transcript

ID, VERSION, ITEM = "reward", "1", "reward"


class RewardScorer:
    id, version = ID, VERSION
    uses_judge = False

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.provenance = endpoint  # recorded in the run's configuration: another reward server is another run
        self._client: RewardClient | None = None
        self._stack = AsyncExitStack()
        self._lock = asyncio.Lock()

    def keys(self, transcript: Transcript, source: Source) -> list[str]:
        return [ITEM]

    async def _connected(self) -> RewardClient:
        async with self._lock:  # one connection, opened by the first session that needs it
            if self._client is None:
                self._client = await self._stack.enter_async_context(RewardClient.connect(self.endpoint))
            return self._client

    async def score(self, transcript: Transcript, source: Source, judge: Judge,
                    only: Collection[str] | None = None) -> list[ItemScore]:
        if transcript.therapist_turns == 0:
            return [invalid_row(self, transcript, ITEM, "the transcript has no therapist turn to reward", judge)]
        client = await self._connected()
        try:
            reward = await client.reward(transcript_messages(transcript))
        except (ContextLengthExceeded, RequestRejected) as exc:
            row = invalid_row(self, transcript, ITEM, str(exc), judge)
        else:
            row = score_row(self, transcript, ITEM, Reading(valid=True), judge, expected=sigmoid(reward)).model_copy(
                update={"reason": f"reward logit {reward:.6g}"})
        return [row.model_copy(update={"judge": f"reward model {client.info.model}"})]

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._client = None


def reward_scorer(suite: object, rubric: object = None, *, reward_endpoint: str | None = None) -> RewardScorer:
    if not reward_endpoint:
        raise ConfigError("reward_endpoint: the suite scores with a reward model; give its vLLM server (--reward-endpoint URL)")
    return RewardScorer(reward_endpoint)
