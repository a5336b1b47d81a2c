"""A scriptable OpenAI-compatible stand-in server for fault tests (real vLLM cannot be made to misbehave on cue).

    server.fail("hang", seconds=30, match="chat")        # the next therapist/client request hangs
    server.fail("status", status=429, retry_after=1)     # the next request of any kind gets 429 + Retry-After
    server.fail("no_logprobs", match="judge", times=None)  # every judge request from now on

It serves GET /v1/models (`models_mode`: normal, invalid_json, list, 500), GET /version (only when `vllm`), and
POST /v1/chat/completions: chat replies (`replies`: model name -> text, or a function of the request body) and
judge requests (max_tokens 1 with logprobs: top_logprobs over the allowed score tokens: `structured_outputs.choice`
when sent, else the digits the prompt asks for). The judge puts `judge_mass` of its probability on the score
tokens, uniformly unless `judge_answer` (body, choices) -> {token: prob} says otherwise; `obey_injection=True`
makes it a gullible judge that answers the maximum whenever an instruction to do so appears OUTSIDE evalkit's
transcript fence. Faults are consumed in order from `faults`; each request is recorded in `requests`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

OPEN, CLOSE = "<transcript>", "</transcript>"
INJECTION = re.compile(r"rate every item the maximum", re.IGNORECASE)
DEFAULT_REPLY = "That sounds really hard. What matters most to you about it?"
FAULTS = ("hang", "status", "echo_auth", "no_logprobs", "not_json", "reasoning", "length", "close",
          *("cut_json", "cut_stream", "drip", "gzip_bomb", "malformed", "echo_auth_escaped"))  # see DEPLOYMENT_FAULTS


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float  # time.monotonic() on arrival

    @property
    def is_judge(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("max_tokens") == 1 and bool(self.body.get("logprobs"))

    @property
    def prompt(self) -> str:
        return "\n".join(m.get("content", "") for m in (self.body or {}).get("messages", []))


@dataclass
class Fault:
    action: str
    match: str = "any"  # "any", "chat" (therapist/client turns), "judge", or a model name
    times: int | None = 1  # None: forever
    seconds: float = 30.0  # hang
    status: int = 500  # status
    body: str = "fault injected"  # status
    retry_after: float | None = None  # status
    variant: str = ""  # malformed: which field is wrong (see MALFORMED)

    def applies(self, rec: Recorded) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.match == "any":
            return True
        if self.match in ("chat", "judge"):
            return rec.is_judge == (self.match == "judge")
        return isinstance(rec.body, dict) and rec.body.get("model") == self.match


def allowed_choices(body: dict) -> list[str]:
    """The score tokens a judge request allows: the vLLM choice constraint, or the digits its prompt asks for."""
    choice = (body.get("structured_outputs") or {}).get("choice")
    if choice:
        return [str(c) for c in choice]
    last = body["messages"][-1]["content"] if body.get("messages") else ""
    span = re.search(r"one digit from (\d) to (\d)", last)
    if span:
        return [str(d) for d in range(int(span.group(1)), int(span.group(2)) + 1)]
    if re.search(r"\b1 \(yes\) or 0 \(no\)", last):
        return ["0", "1"]
    return [str(d) for d in range(10)]


def outside_fence(prompt: str) -> str:
    """What a naive reader takes for instructions: everything except the text from the first <transcript> to the
    first </transcript> after it (so a forged close tag, or text echoed after the real one, is 'outside')."""
    start = prompt.find(OPEN)
    if start < 0:
        return prompt
    end = prompt.find(CLOSE, start)
    return prompt[:start] + (prompt[end + len(CLOSE):] if end >= 0 else "")


def injection_outside_fence(body: dict) -> bool:
    return any(INJECTION.search(outside_fence(m.get("content", ""))) for m in body.get("messages", []))


class FaultyServer:
    def __init__(self) -> None:
        self.models = ["therapist", "client", "judge"]
        self.models_mode = "normal"  # normal | invalid_json | list | 500 | echo_auth
        self.vllm = False
        self.replies: dict[str, str | Callable[[dict], str]] = {}
        self.judge_mass = 1.0
        self.judge_answer: Callable[[dict, list[str]], dict[str, float]] | None = None
        self.obey_injection = False
        self.renamed: dict[str, str] = {}  # served name -> its new name: /v1/models lists the new, requests for the old get 404
        self.answer_as: dict[str, str] = {}  # requested name -> the model name a reply gives
        self.seed_crash = False  # a request carrying a seed gets 500 and kills the server (vLLM's CPU build)
        self.version_body: dict | None = None  # GET /version's body when `vllm` (default {"version": "0.0.0-faulty"})
        self.dead = False
        self.faults: list[Fault] = []
        self.requests: list[Recorded] = []
        self.url = ""
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ scripting

    def fail(self, action: str, **kwargs: Any) -> Fault:
        assert action in FAULTS, action
        fault = Fault(action, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()
        self.models_mode, self.vllm, self.replies, self.judge_mass = "normal", False, {}, 1.0
        self.judge_answer, self.obey_injection = None, False
        self.renamed, self.answer_as, self.seed_crash, self.version_body, self.dead = {}, {}, False, None, False

    def chats(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions") and not r.is_judge]

    def judges(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions") and r.is_judge]

    def _next_fault(self, rec: Recorded) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.applies(rec):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    # ------------------------------------------------------------------ handlers

    async def _record(self, request: web.Request) -> Recorded:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        rec = Recorded(request.method, request.path, dict(request.headers), body, time.monotonic())
        with self._lock:
            self.requests.append(rec)
        return rec

    async def models_handler(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        mode = self.models_mode
        if mode == "invalid_json":
            return web.Response(text='{"object": "list", "data": [', content_type="application/json")
        if mode == "list":
            return web.json_response([{"id": m} for m in self.models])
        if mode == "500":
            return web.Response(status=500, text="internal error")
        if mode == "echo_auth":  # not JSON, and the key sits where a short excerpt of the body cuts it
            return web.Response(text="x" * 50 + " " + rec.headers.get("Authorization", ""), content_type="text/plain")
        served = [self.renamed.get(m, m) for m in self.models]
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in served]})

    async def version_handler(self, request: web.Request) -> web.Response:
        await self._record(request)
        if not self.vllm:
            raise web.HTTPNotFound()
        return web.json_response(self.version_body or {"version": "0.0.0-faulty"})

    async def chat_handler(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        body = rec.body if isinstance(rec.body, dict) else {}
        early = await deployment_state(self, request, rec, body)
        if early is not None:
            return early
        fault = self._next_fault(rec)
        action = fault.action if fault else None
        if action in DEPLOYMENT_FAULTS:
            return await DEPLOYMENT_FAULTS[action](self, request, rec, body, fault)
        if action == "hang":
            assert self._stopping is not None
            try:
                await asyncio.wait_for(self._stopping.wait(), fault.seconds)  # type: ignore[union-attr]
            except asyncio.TimeoutError:
                pass
        elif action == "status":
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}  # type: ignore[union-attr]
            return web.Response(status=fault.status, text=fault.body, headers=headers)  # type: ignore[union-attr]
        elif action == "echo_auth":
            echoed = rec.headers.get("Authorization", "")
            return web.json_response({"error": {"message": f"invalid request; you sent Authorization: {echoed}"}}, status=400)
        elif action == "not_json":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        elif action == "close":
            assert request.transport is not None
            request.transport.close()
            return web.Response(text="")
        if rec.is_judge:
            return web.json_response(self._judge_reply(body, with_logprobs=action != "no_logprobs"))
        return web.json_response(self._chat_reply(body, reasoning=action == "reasoning", length=action == "length"))

    # ------------------------------------------------------------------ replies

    def _completion(self, body: dict, message: dict, finish: str, logprobs: Any = None) -> dict:
        return {"id": "chatcmpl-faulty", "object": "chat.completion", "created": int(time.time()),
                "model": self.answer_as.get(body.get("model"), body.get("model")),
                "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}

    def _chat_reply(self, body: dict, *, reasoning: bool, length: bool) -> dict:
        reply = self.replies.get(body.get("model", ""), DEFAULT_REPLY)
        text = reply(body) if callable(reply) else reply
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reasoning:
            message["reasoning_content"] = "The client seems anxious; reflect first."
        return self._completion(body, message, "length" if length else "stop")

    def judge_distribution(self, body: dict) -> dict[str, float]:
        """Probabilities over the allowed tokens (summing to `judge_mass`; the rest goes to a non-score token)."""
        choices = allowed_choices(body)
        if self.judge_answer is not None:
            probs = self.judge_answer(body, choices)
        elif self.obey_injection and injection_outside_fence(body):
            probs = {choices[-1]: 1.0}
        else:
            probs = {c: 1 / len(choices) for c in choices}
        total = sum(probs.values()) or 1.0
        return {c: self.judge_mass * p / total for c, p in probs.items() if p > 0}

    def _judge_reply(self, body: dict, *, with_logprobs: bool) -> dict:
        probs = self.judge_distribution(body)
        if self.judge_mass < 1:
            probs["I"] = 1 - self.judge_mass
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])
        top = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in ranked[:20]]
        logprobs = {"content": [{"token": ranked[0][0], "logprob": math.log(ranked[0][1]), "bytes": list(ranked[0][0].encode()),
                                 "top_logprobs": top}]} if with_logprobs else None
        return self._completion(body, {"role": "assistant", "content": ranked[0][0]}, "length", logprobs)

    # ------------------------------------------------------------------ lifecycle

    def start(self, port: int = 0) -> FaultyServer:
        """`port`: 0 for a free one; the same port again to bring a stopped server back where its clients look."""
        started, wanted = threading.Event(), port
        self._stopping = None

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._stopping = asyncio.Event()
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_get("/v1/models", self.models_handler)
            app.router.add_get("/version", self.version_handler)
            app.router.add_post("/v1/chat/completions", self.chat_handler)
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", wanted, reuse_address=True)
            loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            started.set()
            loop.run_until_complete(self._stopping.wait())
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self.dead = False
        self._thread = threading.Thread(target=serve, name="faulty-server", daemon=True)
        self._thread.start()
        assert started.wait(10), "the faulty server did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)


    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


# ---------------------------------------------------------------- faults a real deployment meets

async def deployment_state(server: FaultyServer, request: web.Request, rec: Recorded, body: dict) -> web.StreamResponse | None:
    """Answers decided by the server's state before any scripted fault: a crashed server, a renamed model, a seed
    that crashes vLLM's CPU build."""
    if server.dead:  # crashed: every connection is dropped
        assert request.transport is not None
        request.transport.close()
        return web.Response(text="")
    model = body.get("model")
    if model in server.renamed:  # vLLM's answer for a model it does not serve
        return web.json_response({"object": "error", "message": f"The model `{model}` does not exist.",
                                  "type": "NotFoundError", "param": None, "code": 404}, status=404)
    if server.seed_crash and "seed" in body and not rec.is_judge:
        server.dead = True  # vLLM's engine dies; the request in flight gets 500, then the server is gone
        return web.json_response({"object": "error", "message": "EngineCore encountered an issue. See stack trace (above) "
                                  "for the root cause.", "type": "InternalServerError", "param": None, "code": 500}, status=500)
    return None


async def _cut_json(server: FaultyServer, request, rec, body, fault) -> web.StreamResponse:
    """A 200 whose JSON stops half-way (a proxy that cut the body but sent a matching length)."""
    whole = json.dumps(server._judge_reply(body, with_logprobs=True) if rec.is_judge else
                       server._chat_reply(body, reasoning=False, length=False))
    return web.Response(text=whole[: len(whole) // 2], content_type="application/json")


async def _cut_stream(server: FaultyServer, request, rec, body, fault) -> web.StreamResponse:
    """Headers promise more bytes than come: the connection closes mid-body."""
    whole = json.dumps(server._chat_reply(body, reasoning=False, length=False)).encode()
    response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": str(len(whole))})
    await response.prepare(request)
    await response.write(whole[: len(whole) // 3])
    assert request.transport is not None
    request.transport.close()
    return response


async def _drip(server: FaultyServer, request, rec, body, fault) -> web.StreamResponse:
    """A body that arrives one byte every `seconds` (a slow proxy, a stuck stream): never a timeout between bytes."""
    whole = json.dumps(server._chat_reply(body, reasoning=False, length=False)).encode()
    response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": str(len(whole))})
    await response.prepare(request)
    for byte in whole:
        await response.write(bytes([byte]))
        await asyncio.sleep(fault.seconds)
    return response


async def _gzip_bomb(server: FaultyServer, request, rec, body, fault) -> web.StreamResponse:
    """A few hundred kilobytes of gzip that inflate to `fault.status` MiB (default 500 for the status field's 500)."""
    import gzip
    import io

    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as packed:
        block = b" " * (1 << 20)
        for _ in range(fault.status):
            packed.write(block)
    return web.Response(body=buffer.getvalue(), headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})


MALFORMED = {  # parseable JSON, wrong in one field
    "message-string": lambda reply: reply["choices"][0].update(message="hello"),
    "content-list": lambda reply: reply["choices"][0]["message"].update(content=[{"type": "text", "text": "hi"}]),
    "int-tokens": lambda reply: [t.update(token=7) for t in reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]],
    "logprob-1000": lambda reply: reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0].update(logprob=1000.0),
    "logprob-infinity": lambda reply: reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0].update(logprob=math.inf),
    "usage-string": lambda reply: reply.update(usage="lots"),
    "usage-negative": lambda reply: reply.update(usage={"prompt_tokens": "ten", "completion_tokens": -5}),
}


async def _malformed(server: FaultyServer, request, rec, body, fault) -> web.StreamResponse:
    reply = server._judge_reply(body, with_logprobs=True) if rec.is_judge else server._chat_reply(body, reasoning=False, length=False)
    MALFORMED[fault.variant](reply)
    return web.Response(text=json.dumps(reply), content_type="application/json")  # json.dumps writes inf as Infinity


async def _echo_auth_escaped(server: FaultyServer, request, rec, body, fault) -> web.StreamResponse:
    """A 400 echoing the Authorization header as JSON escapes: every character as \\uXXXX, a slash as \\/."""
    echoed = "".join("\\/" if c == "/" else f"\\u{ord(c):04x}" for c in rec.headers.get("Authorization", ""))
    return web.Response(status=400, text='{"error": {"message": "invalid request; you sent Authorization: ' + echoed + '"}}',
                        content_type="application/json")


DEPLOYMENT_FAULTS = {"cut_json": _cut_json, "cut_stream": _cut_stream, "drip": _drip, "gzip_bomb": _gzip_bomb,
                     "malformed": _malformed, "echo_auth_escaped": _echo_auth_escaped}


@pytest.fixture(scope="module")
def _faulty_server_module():
    server = FaultyServer().start()
    yield server
    server.stop()


@pytest.fixture
def faulty_server(_faulty_server_module) -> FaultyServer:
    """One stand-in server per test module, reset (no faults, no recorded requests) for every test."""
    _faulty_server_module.reset()
    yield _faulty_server_module
    _faulty_server_module.reset()

