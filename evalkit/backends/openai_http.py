"""Any OpenAI-compatible chat endpoint: vLLM, GPT-4o, others.

The wire protocol is the contract. A judge reading is one unconstrained request for one token with the top
logprobs of that token, folded onto the score tokens: that gives the probability the model itself put on them
(the mass) and its distribution over them. vLLM's `structured_outputs.choice` masks every other token before
computing logprobs, so what a constrained request reports is exactly this distribution renormalised; it is sent
only when the judge asks for the exact distribution (`with_mass=False`), because a score token was missing from
the top list of a reading that needs it (judging/choice.py). benchmarks/judge_mass.py measures the saving over
sending both requests for every reading.

Requests go through aiohttp, the client vLLM's own benchmark uses: with httpx's connection pool the same load
drove the server at about three quarters of that throughput (benchmarks/performance.py). Failures are
retried a bounded number of times with jittered back-off, within a deadline that bounds the whole request
(429 and 503 after the server's Retry-After), counted by cause, then raised as `BackendUnavailable`; a request
the server refuses, or a reply that parses but is not a chat completion, is `RequestRejected`. A reply is read in
bounded chunks up to a size cap (a gzip bomb never inflates in memory); an endpoint that stops serving the
run's model mid-run is `ModelChanged`; a vLLM server that dies on seeded requests (its CPU build) is named as
such (`SeedCrash`). No API key or URL password appears in any message (evalkit.secrets), and server text is
shown with its control characters escaped. docs/faults.md lists every case.
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
from evalkit.core.secrets import api_key_from_env, register_url, scrub
from evalkit.core.types import ChoiceDistribution, Completion, Message, SamplingParams

CONTEXT_MARKERS = ("maximum context length", "max_model_len", "maximum model length", "context_length_exceeded", "too long")
TOP_LOGPROBS = 20  # the OpenAI API's maximum, and vLLM's default --max-logprobs (a larger request is refused: HTTP 400)
_RETRY_STATUSES = {429, 500, 502, 503, 504}


class _Transient(Exception):
    """A failure worth retrying: 429, 5xx, a dropped connection, a timeout, a reply that is not the protocol.

    `cause` names it in the retry counts (HTTP 429, HTTP 503, timeout, connection, malformed reply). A refused or
    dropped connection is retried a few times only (a server that is gone does not come back within a request);
    busy answers (429, 5xx) and timeouts up to `MAX_ATTEMPTS` in all, within the request's deadline. `fatal`: the
    error to raise when the retries are spent (a seeded request that crashed a vLLM server names --seed)."""

    def __init__(self, message: str, retry_after: float | None = None, *, connection: bool = False, cause: str = "error",
                 fatal: type[BackendError] | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.connection = connection
        self.cause = cause
        self.fatal = fatal


class SeedCrash(BackendError):
    """A vLLM server failed right after requests carrying a seed: its CPU build crashes on seeded requests."""


class ModelChanged(BackendError):
    """The endpoint stopped serving the model the run started with: the run's identity changed."""


CONNECTION_ATTEMPTS = 4
MAX_ATTEMPTS = 8
"""Requests per reading at most, however busy the server says it is: a bounded retry volume under any load."""
MIN_BACKOFF, MAX_BACKOFF = 0.25, 10.0
"""Seconds between attempts: never less (Retry-After: 0 is not an invitation to a busy loop), never more unless
the server's Retry-After asks for it."""


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt`: exponential with jitter, so many requests refused at
    once do not come back at once; at least the server's Retry-After, spread over a quarter more of it."""
    wait = min(MAX_BACKOFF, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
    if retry_after is not None:
        wait = max(retry_after, wait) * random.uniform(1.0, 1.25)
    return max(MIN_BACKOFF, wait)


class RetryStats:
    """Requests sent again, by cause, over a backend's life: the run reports them and the manifest records them."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, cause: str) -> None:
        self.counts[cause] = self.counts.get(cause, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def with_retries(attempt_once, timeouts: Timeouts, what: str, stats: RetryStats | None = None):
    """Call `attempt_once()` until it succeeds, retrying `_Transient` failures with jittered exponential back-off: a
    refused connection a few times, busy answers and timeouts up to `MAX_ATTEMPTS` requests, waiting at least what
    the server's Retry-After asks (if the deadline allows it). The deadline bounds the whole reading, every attempt
    and every wait included. Then `BackendUnavailable` (or the failure's own `fatal` error), naming `what` and why."""
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
            wait = backoff(attempt, exc.retry_after)
            spent = attempt >= (CONNECTION_ATTEMPTS if exc.connection else MAX_ATTEMPTS)
            if wait >= remaining or remaining <= 0 or spent:
                asked = f"; the server asked to wait {exc.retry_after:g} s" if exc.retry_after else ""
                why = "the most a request is retried" if spent else f"within {timeouts.deadline:g} s"
                raise (exc.fatal or BackendUnavailable)(f"{what} gave up after {attempt} attempt(s) ({why}): {exc}{asked}") from None
            if stats is not None:
                stats.add(exc.cause)
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
    one model, when none is named). Returns (model, vLLM version or None; "+cpu" appended when the server says it
    runs on CPU); every failure is one line. What the server sends is read up to a size cap, and shown with its
    control characters escaped."""
    base_url = normalise_base_url(endpoint)
    probe_timeout = aiohttp.ClientTimeout(total=min(30.0, timeouts.total), sock_connect=timeouts.connect)
    try:
        async with session.get(f"{base_url}/models", timeout=probe_timeout) as response:
            status, text = response.status, _decode(await _read_capped(response, MAX_LISTING_BYTES))
    except _TooLarge:
        raise BackendError(f"endpoint {endpoint}: GET /v1/models sent more than {MAX_LISTING_BYTES // 2**20} MiB "
                           "(decompressed); not an OpenAI-compatible model list") from None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise BackendUnavailable(f"cannot reach endpoint {endpoint}: {_describe(exc)}") from None
    if status in (401, 403):
        asked = "refused the API key" if "Authorization" in session.headers else "requires an API key"
        raise BackendError(f"endpoint {endpoint} {asked} (HTTP {status}); check api_key_env")
    listing = _json(text)
    if status != 200 or not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        raise BackendError(f"endpoint {endpoint} is not an OpenAI-compatible server (GET /v1/models gave HTTP {status}"
                           f" without a JSON object holding a 'data' list: {' '.join(_shown(text).split())[:80]!r})")
    served = [str(m.get("id")) for m in listing["data"] if isinstance(m, dict)]
    names = [_shown(name) for name in served[:5]]
    if model is None:
        if len(served) != 1:
            raise ConfigError(f"endpoint {endpoint} serves {len(served)} models ({', '.join(names)}); name one as the model")
        model = served[0]
    elif served and model not in served:
        raise ConfigError(f"endpoint {endpoint} does not serve '{model}' (it serves: {', '.join(names)})")
    version = None
    try:
        async with session.get(base_url.removesuffix("/v1") + "/version", timeout=probe_timeout) as v:
            body = _json(_decode(await _read_capped(v, 65536))) if v.status == 200 else None
            version = body.get("version") if isinstance(body, dict) else None
            version = _shown(str(version))[:80] if version is not None else None
            platform = next((str(body[k]) for k in ("platform", "device", "device_type") if isinstance(body, dict) and body.get(k)), "")
            if version and platform and platform.lower() not in version.lower():
                version = f"{version}+{_shown(platform)[:20]}"
    except (aiohttp.ClientError, asyncio.TimeoutError, _TooLarge):
        pass
    return str(model), version


MAX_REPLY_BYTES = 32 * 2**20
"""The most a chat completion may hold once decompressed: a gzip reply that inflates past it is refused."""
MAX_LISTING_BYTES = 8 * 2**20


class _TooLarge(Exception):
    pass


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, decompressed chunk by chunk, or `_TooLarge` as soon as it passes `limit` bytes (aiohttp inflates
    a compressed reply in bounded steps, so a small gzip bomb never becomes a large buffer)."""
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _shown(text: str) -> str:
    """Server text for a message: no key (scrubbed) and no control characters (a model id cannot drive a terminal)."""
    from evalkit.core.console import printable

    return printable(scrub(text))


def _is_cpu_server(version: str | None) -> bool:
    return version is not None and "cpu" in version.lower()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _completion_problem(data: Any) -> str | None:
    """What makes a parsed reply not a usable chat completion (None: nothing). Token counts that are not counts are
    dropped, not fatal: they only describe the reply."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        return "it has no 'choices' list"
    choice = data["choices"][0]
    if not isinstance(choice, dict):
        return "choices[0] is not an object"
    message = choice.get("message")
    if not isinstance(message, dict):
        return f"choices[0].message is {type(message).__name__}, not an object"
    if message.get("content") is not None and not isinstance(message["content"], str):
        return f"choices[0].message.content is {type(message['content']).__name__}, not text"
    for field in ("reasoning_content", "reasoning"):
        if message.get(field) is not None and not isinstance(message[field], str):
            message[field] = None
    if choice.get("finish_reason") is not None and not isinstance(choice["finish_reason"], str):
        choice["finish_reason"] = None
    usage = data.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            data["usage"] = None
        else:
            for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
                if usage.get(field) is not None and (not isinstance(usage[field], int) or isinstance(usage[field], bool)
                                                     or usage[field] < 0):
                    usage[field] = None
            if usage.get("completion_tokens_details") is not None and not isinstance(usage["completion_tokens_details"], dict):
                usage["completion_tokens_details"] = None
            details = usage.get("completion_tokens_details") or {}
            if details.get("reasoning_tokens") is not None and not isinstance(details["reasoning_tokens"], int):
                details["reasoning_tokens"] = None
    logprobs = choice.get("logprobs")
    if logprobs is None:
        return None
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content") or [], list):
        return "choices[0].logprobs is not an object holding a 'content' list"
    for position, entry in enumerate(logprobs.get("content") or []):
        for candidate in [entry, *((entry.get("top_logprobs") or []) if isinstance(entry, dict) else [])]:
            if not isinstance(candidate, dict) or not isinstance(candidate.get("token"), str):
                return f"logprobs.content[{position}] has a token that is not text"
            value = candidate.get("logprob")
            if not (_finite(value) or value == -math.inf) or value > 1e-6:
                return f"logprobs.content[{position}] has the logprob {value!r} (a log-probability is a number <= 0)"
        if isinstance(entry, dict) and not isinstance(entry.get("top_logprobs") or [], list):
            return f"logprobs.content[{position}].top_logprobs is not a list"
    return None


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
        self.retry_stats = RetryStats()
        self._answers_as: str | None = None  # the model name the first reply gave; a later one must not differ
        self._seed_suspect = False  # a seeded request to vLLM failed as its CPU build fails on seeds

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout,
                                                  connector=aiohttp.TCPConnector(limit=512))
        return self._session

    @classmethod
    async def connect(cls, endpoint: str, model: str | None = None, *, api_key_env: str | None = None,
                      kind: str = "openai", timeouts: Timeouts = Timeouts(), **kwargs: Any) -> OpenAIBackend:
        register_url(endpoint)  # a password in the URL is a secret like a key
        base_url = normalise_base_url(endpoint)
        api_key = api_key_from_env(api_key_env)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        async with aiohttp.ClientSession(headers=headers) as probe:
            model, version = await probe_server(probe, endpoint, model, timeouts)
        info = BackendInfo(kind=kind, model=_shown(str(model)), endpoint=scrub(endpoint), api_key_env=api_key_env,
                           server="vllm" if version else None, server_version=version)
        if _is_cpu_server(version) and kwargs.get("send_seed", True):
            # vLLM's CPU build crashes on seeded requests ("CPU Generator does not use offset"): never send one.
            kwargs["send_seed"] = False
        return cls(base_url, str(model), api_key=api_key, info=info, server_is_vllm=version is not None,
                   timeouts=timeouts, **kwargs)

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await with_retries(lambda: self._post_once(body), self.timeouts, f"endpoint {self.info.endpoint}",
                                      self.retry_stats)
        finally:
            if self.retry_stats.counts:
                self.info.retries = dict(self.retry_stats.counts)

    async def _post_once(self, body: dict[str, Any]) -> dict[str, Any]:
        seeded = "seed" in body and self.server_is_vllm
        try:
            async with self._client().post(f"{self.base_url}/chat/completions", json=body) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
                text = _decode(await _read_capped(response, MAX_REPLY_BYTES))
        except _TooLarge:
            raise RequestRejected(f"endpoint {self.info.endpoint} sent a reply larger than {MAX_REPLY_BYTES // 2**20} MiB "
                                  "(decompressed); evalkit reads no more than that") from None
        except asyncio.TimeoutError:
            raise _Transient(f"no answer within the request timeout ({self.timeouts.total:g} s total, "
                             f"{self.timeouts.first_byte:g} s to the first byte)", cause="timeout") from None
        except aiohttp.ClientError as exc:
            # A connection dropped in the middle of a seeded request is how a vLLM CPU server dies on a seed.
            self._seed_suspect |= seeded and isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError))
            raise _Transient(_describe(exc) + self._seed_hint(seeded), connection=True, cause="connection",
                             fatal=SeedCrash if seeded and self._seed_suspect else None) from None
        text = scrub(text)
        if status in _RETRY_STATUSES:
            self._seed_suspect |= seeded and status >= 500
            raise _Transient(f"HTTP {status}: {_shown(text[:200])}" + self._seed_hint(seeded),
                             retry_after if status in (429, 503) else None, cause=f"HTTP {status}",
                             fatal=SeedCrash if seeded and self._seed_suspect else None)
        if status in (401, 403):
            raise BackendError(f"endpoint {self.info.endpoint} refused the API key (HTTP {status})")
        if status == 404 and "model" in text.lower() and ("not exist" in text.lower() or "not found" in text.lower()):
            raise ModelChanged(f"endpoint {self.info.endpoint} no longer serves '{self.info.model}' (HTTP 404: "
                               f"{_shown(text[:160])}): the model behind this run changed mid-run, so the run's identity "
                               "changed; what was written is kept, start a new run (another --out) for the new model")
        if status >= 400:
            message = _shown(text[:300])
            if any(marker in message.lower() for marker in CONTEXT_MARKERS):
                raise ContextLengthExceeded(f"the prompt is longer than the model's context window: {message}")
            raise RequestRejected(f"endpoint {self.info.endpoint} rejected the request (HTTP {status}): {message}")
        data = _json(text)
        if data is None:  # not JSON at all (an HTML error page, or a reply cut mid-JSON): worth another try
            raise _Transient(f"reply is not an OpenAI chat completion: {_shown(text[:200])!r}", cause="malformed reply")
        problem = _completion_problem(data)
        if problem:
            raise RequestRejected(f"endpoint {self.info.endpoint} sent a reply that is not a valid chat completion: "
                                  f"{problem}")
        answered = data.get("model")
        if isinstance(answered, str) and answered:
            if self._answers_as is None:
                self._answers_as = answered
            elif answered != self._answers_as:
                raise ModelChanged(f"endpoint {self.info.endpoint} now answers as model '{_shown(answered)}' instead of "
                                   f"'{_shown(self._answers_as)}': the model behind this run changed mid-run, so the run's "
                                   "identity changed; what was written is kept, start a new run (another --out) for the new model")
        return data

    def _seed_hint(self, seeded: bool) -> str:
        if not (seeded and self._seed_suspect):
            return ""
        return (" — it failed right after requests carrying --seed, and vLLM's CPU build crashes on seeded requests "
                "(\"CPU Generator does not use offset\"): if this server is one, run again without --seed (into another --out)")

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
        """One request: the top logprobs of an unconstrained answer, folded onto `choices` (distribution, mass, and
        which choices the list left out). `with_mass=False` on vLLM: the exact distribution over every choice, from
        one request restricted to them (no mass: the constraint hides it)."""
        body = self._judge_body(messages)
        if self.server_is_vllm and not with_mass:
            constrained = {**body, "structured_outputs": {"choice": choices}}
            return fold_top_logprobs(await self._top_logprobs(constrained), choices, constrained=True, exact=True)
        # On vLLM a choice is exactly one token text, as its choice constraint reads it; elsewhere " 2" counts as "2".
        return fold_top_logprobs(await self._top_logprobs(body), choices, asked=body["top_logprobs"],
                                 exact=self.server_is_vllm, can_constrain=self.server_is_vllm)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def fold_top_logprobs(pairs: list[tuple[str, float]], choices: list[str], *, constrained: bool = False,
                      asked: int | None = None, exact: bool = False, can_constrain: bool = False) -> ChoiceDistribution:
    """Fold a first token's top alternatives onto the allowed answers.

    `mass` is the probability the listed alternatives that are allowed answers carried (for a constrained
    request it is ~1 by construction and is not reported). `probs` is renormalised over the choices; empty when
    no allowed answer had any probability. `exact`: a token counts only if it is a choice (what vLLM's choice
    constraint allows); otherwise whitespace around it is ignored. Choices missing from the list are `unlisted`;
    each carried at most `list_bound(...)` of the `asked` alternatives.
    """
    probs = {c: 0.0 for c in choices}
    listed: set[str] = set()
    for token, p in pairs:
        key = token if exact else token.strip()
        if key in probs:
            probs[key] += p
            listed.add(key)
    mass = sum(probs.values())
    normalised = {c: p / mass for c, p in probs.items()} if mass > 0 else {}
    if constrained:
        return ChoiceDistribution(probs=normalised, mass=None, constrained=True)
    unlisted = tuple(c for c in choices if c not in listed)
    return ChoiceDistribution(probs=normalised, mass=mass, constrained=False, unlisted=unlisted,
                              unlisted_below=list_bound([p for _, p in pairs], asked) if unlisted else None,
                              can_constrain=can_constrain)


def list_bound(probs: list[float], asked: int | None) -> float:
    """The most probability a token missing from a first token's top list can carry.

    vLLM's chat endpoint lists the sampled token first and then the most likely ones, `asked` in all: when the
    sampled token ranks below `asked`, the asked-th most likely token is left out. Either way every token not listed
    ranks at or below the asked-th, so it carries at most the (asked - 1)-th largest listed probability (for a list
    sorted by probability, as OpenAI's is, that is one rank looser than needed, and still true)."""
    ranked = sorted(probs, reverse=True)
    if not ranked or (asked is not None and asked < 2):
        return 1.0
    return ranked[min(asked - 1, len(ranked)) - 1] if asked is not None else ranked[-1]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed ({text})"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return text
