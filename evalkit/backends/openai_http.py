"""Any OpenAI-compatible chat endpoint: vLLM, GPT-4o, others.

The wire protocol is the contract. When the server is vLLM (it answers GET /version), a judge's answer is
restricted to the score tokens with `structured_outputs.choice`; because vLLM applies that constraint to the
logits before computing any logprobs (raw or processed), a second, unconstrained request for the same prompt
reads how much probability the model itself put on the score tokens. It shares the whole prompt with the
first, so the prefix cache serves it (benchmarks/judge_mass.py measures the cost).

Requests go through aiohttp, the client vLLM's own benchmark uses: with httpx's connection pool the same load
drove the server at about three quarters of that throughput (benchmarks/performance.py). Failures are
retried within a deadline (429 and 503 after the server's Retry-After), then raised as `BackendUnavailable`;
a request the server refuses is `RequestRejected`. No API key appears in any message (evalkit.secrets).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from evalkit.backends.base import BackendInfo, Timeouts
from evalkit.core.errors import BackendError, BackendUnavailable, ConfigError, ContextLengthExceeded, RequestRejected
from evalkit.core.secrets import api_key_from_env, scrub
from evalkit.core.types import ChoiceDistribution, Completion, Message, SamplingParams

CONTEXT_MARKERS = ("maximum context length", "max_model_len", "maximum model length", "context_length_exceeded", "too long")
TOP_LOGPROBS = 20  # the OpenAI API's maximum, and vLLM's default --max-logprobs
_RETRY_STATUSES = {429, 500, 502, 503, 504}


class _Transient(Exception):
    """A failure worth retrying: 429, 5xx, a dropped connection, a timeout, a reply that is not the protocol.

    A refused or dropped connection is retried a few times only (a server that is gone does not come back within
    a request); busy answers (429, 5xx) and timeouts are retried until the request's deadline."""

    def __init__(self, message: str, retry_after: float | None = None, *, connection: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.connection = connection


CONNECTION_ATTEMPTS = 4


async def with_retries(attempt_once, timeouts: Timeouts, what: str):
    """Call `attempt_once()` until it succeeds, retrying `_Transient` failures: a refused connection a few times,
    busy answers and timeouts until the deadline, waiting what the server's Retry-After asks (if the deadline
    allows it). Then `BackendUnavailable`, naming `what` and why."""
    deadline = time.monotonic() + timeouts.deadline
    attempt = 0
    while True:
        attempt += 1
        try:
            # The deadline bounds every attempt too: a slow server must not outlive it by a whole `total`.
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                return await attempt_once()
        except TimeoutError:
            raise BackendUnavailable(f"{what} gave up after {attempt} attempt(s): timed out at the request deadline "
                                     f"({timeouts.deadline:g} s; --timeout deadline=SECONDS)") from None
        except _Transient as exc:
            remaining = deadline - time.monotonic()
            wait = exc.retry_after if exc.retry_after is not None else min(8.0, 0.5 * 2 ** attempt * random.uniform(0.5, 1.0))
            if wait >= remaining or remaining <= 0 or (exc.connection and attempt >= CONNECTION_ATTEMPTS):
                asked = f"; the server asked to wait {exc.retry_after:g} s" if exc.retry_after else ""
                raise BackendUnavailable(f"{what} gave up after {attempt} attempt(s) within {timeouts.deadline:g} s: "
                                         f"{exc}{asked}") from None
            await asyncio.sleep(wait)


def normalise_base_url(url: str, field: str = "endpoint") -> str:
    """The URL's /v1 base, or a one-line ConfigError naming what is wrong with it."""
    text = url.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise ConfigError(f"{field} '{url}': not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{field} '{url}': expected an http:// or https:// URL with a host")
    del port
    return text if text.endswith("/v1") else f"{text}/v1"


async def probe_server(session: aiohttp.ClientSession, endpoint: str, model: str | None,
                       timeouts: Timeouts) -> tuple[str, str | None]:
    """GET /v1/models and /version: the endpoint answers, speaks the OpenAI protocol, and serves `model` (or exactly
    one model, when none is named). Returns (model, vLLM version or None); every failure is one line."""
    base_url = normalise_base_url(endpoint)
    probe_timeout = aiohttp.ClientTimeout(total=min(30.0, timeouts.total), sock_connect=timeouts.connect)
    try:
        async with session.get(f"{base_url}/models", timeout=probe_timeout) as response:
            status, text = response.status, await response.text(errors="replace")
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise BackendUnavailable(f"cannot reach endpoint {endpoint}: {_describe(exc)}") from None
    if status in (401, 403):
        asked = "refused the API key" if "Authorization" in session.headers else "requires an API key"
        raise BackendError(f"endpoint {endpoint} {asked} (HTTP {status}); check api_key_env")
    listing = _json(text)
    if status != 200 or not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        raise BackendError(f"endpoint {endpoint} is not an OpenAI-compatible server (GET /v1/models gave HTTP {status}"
                           f" without a JSON object holding a 'data' list: {' '.join(scrub(text).split())[:80]!r})")
    served = [str(m.get("id")) for m in listing["data"] if isinstance(m, dict)]
    if model is None:
        if len(served) != 1:
            raise ConfigError(f"endpoint {endpoint} serves {len(served)} models ({', '.join(served[:5])}); name one as the model")
        model = served[0]
    elif served and model not in served:
        raise ConfigError(f"endpoint {endpoint} does not serve '{model}' (it serves: {', '.join(served[:5])})")
    version = None
    try:
        async with session.get(base_url.removesuffix("/v1") + "/version", timeout=probe_timeout) as v:
            body = _json(await v.text()) if v.status == 200 else None
            version = body.get("version") if isinstance(body, dict) else None
    except (aiohttp.ClientError, asyncio.TimeoutError):
        pass
    return str(model), version


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class OpenAIBackend:
    """Talks to `base_url` (ending in /v1) as `model`. Build it with `connect()`, which checks the endpoint."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, info: BackendInfo,
                 timeouts: Timeouts = Timeouts(), server_is_vllm: bool = False, send_seed: bool = True):
        self.base_url = base_url
        self.model = model
        self.info = info
        self.server_is_vllm = server_is_vllm
        self.send_seed = send_seed
        self.timeouts = timeouts
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.first_byte)
        self._session: aiohttp.ClientSession | None = None  # made on first use, inside the running loop

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout,
                                                  connector=aiohttp.TCPConnector(limit=512))
        return self._session

    @classmethod
    async def connect(cls, endpoint: str, model: str | None = None, *, api_key_env: str | None = None,
                      kind: str = "openai", timeouts: Timeouts = Timeouts(), **kwargs: Any) -> OpenAIBackend:
        base_url = normalise_base_url(endpoint)
        api_key = api_key_from_env(api_key_env)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        async with aiohttp.ClientSession(headers=headers) as probe:
            model, version = await probe_server(probe, endpoint, model, timeouts)
        info = BackendInfo(kind=kind, model=str(model), endpoint=endpoint, api_key_env=api_key_env,
                           server="vllm" if version else None, server_version=version)
        return cls(base_url, str(model), api_key=api_key, info=info, server_is_vllm=version is not None,
                   timeouts=timeouts, **kwargs)

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        return await with_retries(lambda: self._post_once(body), self.timeouts, f"endpoint {self.info.endpoint}")

    async def _post_once(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._client().post(f"{self.base_url}/chat/completions", json=body) as response:
                status, text = response.status, await response.text(errors="replace")
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            raise _Transient(f"no answer within the request timeout ({self.timeouts.total:g} s total, "
                             f"{self.timeouts.first_byte:g} s to the first byte)") from None
        except aiohttp.ClientError as exc:
            raise _Transient(_describe(exc), connection=True) from None
        text = scrub(text)
        if status in _RETRY_STATUSES:
            raise _Transient(f"HTTP {status}: {text[:200]}", retry_after if status in (429, 503) else None)
        if status in (401, 403):
            raise BackendError(f"endpoint {self.info.endpoint} refused the API key (HTTP {status})")
        if status >= 400:
            message = text[:300]
            if any(marker in message.lower() for marker in CONTEXT_MARKERS):
                raise ContextLengthExceeded(f"the prompt is longer than the model's context window: {message}")
            raise RequestRejected(f"endpoint {self.info.endpoint} rejected the request (HTTP {status}): {message}")
        data = _json(text)
        try:
            data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise _Transient(f"reply is not an OpenAI chat completion: {text[:200]!r}") from None
        return data

    async def chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        body = {"model": self.model, "messages": messages, **params.request_fields(send_seed=self.send_seed)}
        start = time.perf_counter()
        data = await self._post(body)
        choice = data["choices"][0]
        message = choice["message"]
        usage = data.get("usage") or {}
        details = usage.get("completion_tokens_details") or {}
        # vLLM's reasoning parsers put the thinking in `reasoning_content` (older) or `reasoning` (newer).
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        reasoning = reasoning if isinstance(reasoning, str) and reasoning else None
        reasoning_tokens = details.get("reasoning_tokens") if isinstance(details, dict) else None
        text = message.get("content") or ""
        completion_tokens = usage.get("completion_tokens")
        if reasoning and not reasoning_tokens and isinstance(completion_tokens, int) and self.server_is_vllm:
            # vLLM 0.32 reports 0. Re-tokenising the decoded thinking over-counts (bytes of split characters
            # come back as replacement characters), so count what is not reasoning: the reply.
            reply_tokens = await self._count_tokens(text) if text else 0
            reasoning_tokens = None if reply_tokens is None else max(completion_tokens - reply_tokens, 0)
        return Completion(
            text=text,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=completion_tokens,
            latency_s=time.perf_counter() - start,
            reasoning=reasoning,
            reasoning_tokens=reasoning_tokens,
        )

    async def _count_tokens(self, text: str) -> int | None:
        """Tokens in `text` by the served model's tokenizer (vLLM's /tokenize). None when the server cannot say;
        the count is then unknown, not guessed."""
        url = self.base_url.removesuffix("/v1") + "/tokenize"
        try:
            async with self._client().post(url, json={"model": self.model, "prompt": text, "add_special_tokens": False}) as response:
                body = _json(await response.text()) if response.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None
        count = body.get("count") if isinstance(body, dict) else None
        return count if isinstance(count, int) else None

    def _judge_body(self, messages: list[Message]) -> dict[str, Any]:
        # Every sampling knob neutral: the reported probabilities must be the model's own. vLLM fills unset
        # knobs from the model's generation_config.json, and e.g. top_k=2 there collapses the distribution.
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": 1, "temperature": 1.0,
                                "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                                "logprobs": True, "top_logprobs": TOP_LOGPROBS}
        if self.server_is_vllm:
            body.update(top_k=-1, min_p=0.0, repetition_penalty=1.0)
        return body

    async def _top_logprobs(self, body: dict[str, Any]) -> list[tuple[str, float]]:
        data = await self._post(body)
        try:
            top = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            return [(entry["token"], math.exp(entry["logprob"])) for entry in top]
        except (KeyError, IndexError, TypeError):
            raise RequestRejected("the judge's reply carried no logprobs for its first token (does the endpoint "
                                  "support logprobs and top_logprobs?)") from None

    async def choice_distribution(self, messages: list[Message], choices: list[str], *,
                                  with_mass: bool = True) -> ChoiceDistribution:
        body = self._judge_body(messages)
        if not self.server_is_vllm:  # top-20 alternatives of an unconstrained answer, folded onto the choices
            return fold_top_logprobs(await self._top_logprobs(body), choices)
        constrained = {**body, "structured_outputs": {"choice": choices}}
        if not with_mass:
            return fold_top_logprobs(await self._top_logprobs(constrained), choices, constrained=True)
        exact, free = await asyncio.gather(self._top_logprobs(constrained), self._top_logprobs(body))
        mass = fold_top_logprobs(free, choices).mass
        return ChoiceDistribution(probs=fold_top_logprobs(exact, choices, constrained=True).probs, mass=mass, constrained=True)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def fold_top_logprobs(pairs: list[tuple[str, float]], choices: list[str], *, constrained: bool = False) -> ChoiceDistribution:
    """Fold a first token's top-k alternatives onto the allowed answers.

    `mass` is the probability the alternatives that are allowed answers carried (for a constrained request it
    is ~1 by construction and is not reported). `probs` is renormalised over the choices; empty when no
    allowed answer had any probability.
    """
    probs = {c: 0.0 for c in choices}
    for token, p in pairs:
        key = token.strip()
        if key in probs:
            probs[key] += p
    mass = sum(probs.values())
    normalised = {c: p / mass for c, p in probs.items()} if mass > 0 else {}
    return ChoiceDistribution(probs=normalised, mass=None if constrained else mass, constrained=constrained)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed ({text})"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return text
