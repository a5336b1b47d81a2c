"""Any OpenAI-compatible chat endpoint: vLLM, GPT-4o, others.

The wire protocol is the contract. Two vLLM extensions are used when the server is
vLLM (it answers GET /version): `structured_outputs.choice` to restrict a judge's
answer to the score tokens.

Requests go through aiohttp, the client vLLM's own benchmark uses: with httpx's connection pool the
same load drove the server at about three quarters of that throughput (benchmarks/performance.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from typing import Any

import aiohttp
import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ..errors import BackendError, ConfigError
from ..suites import SamplingParams
from .base import (
    BackendInfo,
    BackendUnavailable,
    ChoiceDistribution,
    Completion,
    ContextLengthExceeded,
    Message,
    RequestRejected,
)

CONTEXT_MARKERS = ("maximum context length", "max_model_len", "maximum model length", "context_length_exceeded", "too long")
TOP_LOGPROBS = 20  # the OpenAI API's maximum, and vLLM's default --max-logprobs


class _Transient(Exception):
    """A failure worth retrying: 429, 5xx, a dropped connection, a reply that is not the protocol."""


def normalise_base_url(url: str) -> str:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--endpoint '{url}': expected an http:// or https:// URL")
    return url if url.endswith("/v1") else f"{url}/v1"


def api_key_from_env(name: str | None) -> str | None:
    if name is None:
        return None
    key = os.environ.get(name)
    if not key:
        raise ConfigError(f"--api-key-env {name}: the environment variable {name} is not set")
    return key


class OpenAIBackend:
    """Talks to `base_url` (ending in /v1) as `model`. Build it with `connect()`, which checks the endpoint."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, info: BackendInfo,
                 timeout_s: float = 600.0, max_attempts: int = 4, server_is_vllm: bool = False):
        self.base_url = base_url
        self.model = model
        self.info = info
        self.server_is_vllm = server_is_vllm
        self._max_attempts = max_attempts
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=10.0)
        self._session: aiohttp.ClientSession | None = None  # made on first use, inside the running loop

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout,
                                                  connector=aiohttp.TCPConnector(limit=512))
        return self._session

    @classmethod
    async def connect(cls, endpoint: str, model: str | None = None, *, api_key_env: str | None = None,
                      kind: str = "openai", **kwargs: Any) -> OpenAIBackend:
        base_url = normalise_base_url(endpoint)
        api_key = api_key_from_env(api_key_env)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        async with httpx.AsyncClient(headers=headers, timeout=15.0) as probe:
            try:
                response = await probe.get(f"{base_url}/models")
            except httpx.HTTPError as exc:
                raise BackendError(f"cannot reach endpoint {endpoint}: {_describe(exc)}") from None
            if response.status_code in (401, 403):
                raise BackendError(f"endpoint {endpoint} refused the API key (HTTP {response.status_code}); set --api-key-env")
            if response.status_code != 200:
                raise BackendError(f"endpoint {endpoint} is not an OpenAI-compatible server (GET /v1/models gave HTTP {response.status_code})")
            served = [m.get("id") for m in response.json().get("data", [])]
            if model is None:
                if len(served) != 1:
                    raise ConfigError(f"endpoint {endpoint} serves {len(served)} models ({', '.join(map(str, served[:5]))}); name one with --model")
                model = served[0]
            elif served and model not in served:
                raise ConfigError(f"endpoint {endpoint} does not serve '{model}' (it serves: {', '.join(map(str, served[:5]))})")
            version = None
            try:
                v = await probe.get(base_url.removesuffix("/v1") + "/version")
                if v.status_code == 200:
                    version = v.json().get("version")
            except (httpx.HTTPError, ValueError):
                pass
        info = BackendInfo(kind=kind, model=model, endpoint=endpoint, api_key_env=api_key_env,  # type: ignore[arg-type]
                           server="vllm" if version else None, server_version=version)
        return cls(base_url, model, api_key=api_key, info=info, server_is_vllm=version is not None, **kwargs)

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._max_attempts),
                wait=wait_random_exponential(multiplier=0.5, max=8.0),
                retry=retry_if_exception_type(_Transient),
                reraise=True,
            ):
                with attempt:
                    return await self._post_once(body)
        except _Transient as exc:
            raise BackendUnavailable(f"endpoint {self.info.endpoint} stopped answering after {self._max_attempts} attempts: {exc}") from None
        raise AssertionError("unreachable")

    async def _post_once(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._client().post(f"{self.base_url}/chat/completions", json=body) as response:
                status, text = response.status, await response.text(errors="replace")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _Transient(_describe(exc)) from None
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}: {text[:200]}")
        if status in (401, 403):
            raise BackendError(f"endpoint {self.info.endpoint} refused the API key (HTTP {status})")
        if status >= 400:
            message = text[:500]
            if any(marker in message.lower() for marker in CONTEXT_MARKERS):
                raise ContextLengthExceeded(message)
            raise RequestRejected(f"HTTP {status}: {message}")
        try:
            data = json.loads(text)
            data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Transient(f"reply is not an OpenAI chat completion: {text[:200]!r}") from None
        return data

    async def chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        # No per-request seed: vLLM's CPU build crashes under concurrent seeded requests.
        body = {"model": self.model, "messages": messages, **params.request_fields()}
        start = time.perf_counter()
        data = await self._post(body)
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency_s=time.perf_counter() - start,
        )

    async def choice_distribution(self, messages: list[Message], choices: list[str]) -> ChoiceDistribution:
        # Every sampling knob set to neutral: the reported probabilities must be the model's own. vLLM fills
        # unset knobs from the model's generation_config.json, and e.g. top_k=2 there collapses the
        # distribution to a point mass.
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": 1,
            "temperature": 1.0,
            "top_p": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        if self.server_is_vllm:
            body.update(top_k=-1, min_p=0.0, repetition_penalty=1.0, structured_outputs={"choice": choices})
        data = await self._post(body)
        try:
            top = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            pairs = [(entry["token"], math.exp(entry["logprob"])) for entry in top]
        except (KeyError, IndexError, TypeError):
            raise RequestRejected("the reply carried no top_logprobs for the first token") from None
        return distribution_from_top_logprobs(pairs, choices, constrained_request=self.server_is_vllm)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def distribution_from_top_logprobs(pairs: list[tuple[str, float]], choices: list[str], *,
                                   constrained_request: bool) -> ChoiceDistribution:
    """Fold the first token's top-k alternatives onto the allowed answers.

    If every alternative with non-zero probability is an allowed answer and they sum to one, the server
    reported probabilities after applying the constraint (vLLM's processed logprobs): the mass off the
    choices is then unknown. Otherwise the probabilities are the model's raw ones and `mass` is what the
    allowed answers carried.
    """
    probs = {c: 0.0 for c in choices}
    outside = 0.0
    for token, p in pairs:
        key = token.strip()
        if key in probs:
            probs[key] += p
        else:
            outside += p
    mass = sum(probs.values())
    masked = constrained_request and outside < 1e-9 and abs(mass - 1.0) < 1e-3
    if mass > 0:
        probs = {c: p / mass for c, p in probs.items()}
    return ChoiceDistribution(probs=probs, mass=None if masked else mass, constrained=masked)


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (httpx.ConnectError, aiohttp.ClientConnectorError)):
        return f"connection failed ({text})"
    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError)):
        return f"timed out ({type(exc).__name__})"
    return text
