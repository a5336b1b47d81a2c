"""Several endpoints serving one model: sessions spread by least outstanding requests, with failover.

A session (or, for the judge, a transcript) is pinned to the replica that took its first request, so
its growing conversation, and the transcript every judge item prompt starts with, stay in that
replica's prefix cache. A replica that stops answering is taken out for the rest of the run; the
request in flight is re-sent to another replica and the sessions pinned to it move with it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from evalkit.backends.base import Backend, BackendSpec, BuildContext, Timeouts
from evalkit.backends.openai_http import OpenAIBackend
from evalkit.core.console import warn
from evalkit.core.errors import BackendUnavailable, ConfigError
from evalkit.core.types import ChoiceDistribution, Completion, Message, SamplingParams
from evalkit.store.records import ReplicaRecord

T = TypeVar("T")
_routing_key: ContextVar[str | None] = ContextVar("evalkit_routing_key", default=None)
MAX_PINS = 65_536  # sessions in flight are far fewer; old pins are dropped first


@contextmanager
def routing_key(key: str) -> Iterator[None]:
    """Requests made inside this block (and tasks started in it) go to one replica, chosen at the first."""
    token = _routing_key.set(key)
    try:
        yield
    finally:
        _routing_key.reset(token)


class ReplicaPool:
    """A `Backend` over several replicas of one model."""

    def __init__(self, replicas: list[Backend], *, warn: Callable[[str], None] = warn):
        if not replicas:
            raise ValueError("a replica pool needs at least one replica")
        self.replicas = replicas
        self.outstanding = [0] * len(replicas)
        self.requests = [0] * len(replicas)
        self.failures: dict[int, str] = {}
        self._pins: OrderedDict[str, int] = OrderedDict()
        self._warn = warn
        first = replicas[0].info
        self.info = first.model_copy(update={"endpoint": first.endpoint, "replicas": self.records()})

    @classmethod
    async def connect(cls, endpoints: list[str], model: str | None, *, api_key_env: str | None,
                      timeouts: Timeouts = Timeouts()) -> ReplicaPool:
        replicas: list[Backend] = []
        try:
            for endpoint in endpoints:
                replicas.append(await OpenAIBackend.connect(endpoint, model, api_key_env=api_key_env, timeouts=timeouts))
                model = model or replicas[0].info.model
            served = {r.info.model for r in replicas}
            if len(served) > 1:
                raise ConfigError(f"endpoints: the replicas serve different models ({', '.join(sorted(served))}); "
                                  "every endpoint of one role must serve the same model under the same name")
        except BaseException:
            for replica in replicas:
                await replica.aclose()
            raise
        return cls(replicas)

    def records(self) -> list[ReplicaRecord]:
        return [ReplicaRecord(endpoint=r.info.endpoint or "", requests=self.requests[i], failure=self.failures.get(i))
                for i, r in enumerate(self.replicas)]

    def _pick(self) -> int:
        key = _routing_key.get()
        if key is not None and (pinned := self._pins.get(key)) is not None and pinned not in self.failures:
            self._pins.move_to_end(key)
            return pinned
        live = [i for i in range(len(self.replicas)) if i not in self.failures]
        if not live:
            reasons = "; ".join(f"{self.replicas[i].info.endpoint}: {why}" for i, why in self.failures.items())
            raise BackendUnavailable(f"all {len(self.replicas)} replicas of {self.info.model} stopped answering ({reasons})")
        chosen = min(live, key=lambda i: (self.outstanding[i], self.requests[i]))
        if key is not None:
            self._pins[key] = chosen
            if len(self._pins) > MAX_PINS:
                self._pins.popitem(last=False)
        return chosen

    def _fail(self, index: int, error: BackendUnavailable) -> None:
        if index in self.failures:
            return
        self.failures[index] = str(error)[:300]
        left = len(self.replicas) - len(self.failures)
        self._warn(f"replica {self.replicas[index].info.endpoint} of {self.info.model} stopped answering and is out "
                   f"of this run; its sessions continue on the {left} left ({error})")

    async def _route(self, call: Callable[[Backend], Awaitable[T]]) -> T:
        while True:
            index = self._pick()
            self.outstanding[index] += 1
            self.requests[index] += 1
            try:
                return await call(self.replicas[index])
            except BackendUnavailable as exc:
                self._fail(index, exc)  # and try the next live replica
            finally:
                self.outstanding[index] -= 1
                self.info.replicas = self.records()
                retries: dict[str, int] = {}
                for replica in self.replicas:
                    for cause, n in (replica.info.retries or {}).items():
                        retries[cause] = retries.get(cause, 0) + n
                self.info.retries = retries or None

    async def chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        return await self._route(lambda replica: replica.chat(messages, params))

    async def choice_distribution(self, messages: list[Message], choices: list[str], *,
                                  with_mass: bool = True) -> ChoiceDistribution:
        return await self._route(lambda replica: replica.choice_distribution(messages, choices, with_mass=with_mass))

    async def aclose(self) -> None:
        for replica in self.replicas:
            await replica.aclose()


async def build(spec: BackendSpec, context: BuildContext) -> OpenAIBackend | ReplicaPool:
    """The `openai` kind: one endpoint, or several replicas of one model."""
    if not spec.endpoints:
        raise ConfigError("backend 'openai' needs an endpoint")
    if len(spec.endpoints) > 1:
        return await ReplicaPool.connect(list(spec.endpoints), spec.model, api_key_env=spec.api_key_env, timeouts=spec.timeouts)
    return await OpenAIBackend.connect(spec.endpoints[0], spec.model, api_key_env=spec.api_key_env, timeouts=spec.timeouts)
