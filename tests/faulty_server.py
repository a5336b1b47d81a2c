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
FAULTS = ("hang", "status", "echo_auth", "no_logprobs", "not_json", "reasoning", "length", "close")


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
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})

    async def version_handler(self, request: web.Request) -> web.Response:
        await self._record(request)
        if not self.vllm:
            raise web.HTTPNotFound()
        return web.json_response({"version": "0.0.0-faulty"})

    async def chat_handler(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        body = rec.body if isinstance(rec.body, dict) else {}
        fault = self._next_fault(rec)
        action = fault.action if fault else None
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
        return {"id": "chatcmpl-faulty", "object": "chat.completion", "created": int(time.time()), "model": body.get("model"),
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

    def start(self) -> FaultyServer:
        started = threading.Event()

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
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            started.set()
            loop.run_until_complete(self._stopping.wait())
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="faulty-server", daemon=True)
        self._thread.start()
        assert started.wait(10), "the faulty server did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)


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

