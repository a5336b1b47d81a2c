"""The one small async interface every backend implements, and the registry that builds backends by name.

A backend is anything with `info`, `chat`, `choice_distribution` and `aclose`. Built-in kinds (openai,
vllm, vllm-offline, transformers, mock) are registered exactly as a user's would be:

    from evalkit.backends import register_backend

    @register_backend("my-api")
    async def build(spec: BackendSpec, context: BuildContext) -> Backend: ...

and `evalkit run --backend my-api` (or `evalkit.run(evalkit.RoleConfig(model=..., backend="my-api"), ...)`) uses it.
A ready backend object may also be passed to `evalkit.run` for any role. Built-in factories are imported
only when used, so `import evalkit` never loads vLLM, torch or an HTTP client.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from evalkit.core.errors import BackendError, ConfigError
from evalkit.core.types import ChoiceDistribution, Completion, Message, SamplingParams
from evalkit.store.records import BackendRecord as BackendInfo

__all__ = ["Backend", "BackendInfo", "BackendSpec", "BuildContext", "ChoiceDistribution", "Completion", "Message",
           "backend_kinds", "build_backend", "register_backend"]


@runtime_checkable
class Backend(Protocol):
    info: BackendInfo

    async def chat(self, messages: list[Message], params: SamplingParams) -> Completion: ...

    async def choice_distribution(self, messages: list[Message], choices: list[str], *,
                                  with_mass: bool = True) -> ChoiceDistribution: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `first_byte`: until the server starts answering one request (for a non-streamed request, the whole
    generation); `total`: one request attempt; `deadline`: one request including its retries and waits."""

    connect: float = 10.0
    first_byte: float = 120.0
    total: float = 150.0
    deadline: float = 180.0

    def __post_init__(self) -> None:
        for name in ("connect", "first_byte", "total", "deadline"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"timeout '{name}': {value}: expected a positive number of seconds")


@dataclass(frozen=True)
class BackendSpec:
    """What a factory needs to build one backend for one model."""

    kind: str
    model: str | None = None
    """A local path (resolved), a hub id, or the served model name at an endpoint."""
    endpoints: tuple[str, ...] = ()
    api_key_env: str | None = None
    model_hash: str | None = None
    timeouts: Timeouts = Timeouts()
    options: dict = field(default_factory=dict)
    """Kind-specific settings (e.g. `replies` for mock, `lora_modules` for vllm)."""


@dataclass
class BuildContext:
    """What factories share within one run: where logs go, settings for local engines, servers to stop."""

    log_dir: Path
    max_model_len: int | None = None
    vllm_args: list[str] = field(default_factory=list)
    trust_remote_code: bool = False
    reasoning_parser: str | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    """Called (in reverse) when the run's backends are closed: managed servers register their stop here."""
    failure_explainers: list[Callable[[], str]] = field(default_factory=list)
    """Each returns why a resource it owns died (e.g. a managed server's exit code and log tail), or ''."""


Factory = Callable[[BackendSpec, BuildContext], Awaitable[Backend]]

_BUILT_IN: dict[str, tuple[str, bool]] = {
    # kind: (module:function, runs on this machine)
    "openai": ("evalkit.backends.replicas:build", False),
    "vllm": ("evalkit.backends.managed:build", True),
    "vllm-offline": ("evalkit.backends.vllm_offline:build", True),
    "transformers": ("evalkit.backends.transformers_local:build", True),
    "mock": ("evalkit.backends.mock:build", False),
}
_REGISTRY: dict[str, Factory] = {}
_LOCAL: set[str] = {kind for kind, (_, local) in _BUILT_IN.items() if local}


def register_backend(kind: str, *, local: bool = False) -> Callable[[Factory], Factory]:
    """Register a factory for `kind`. `local`: the model runs on this machine (a path is checked and hashed)."""
    def decorate(factory: Factory) -> Factory:
        _REGISTRY[kind] = factory
        if local:
            _LOCAL.add(kind)
        return factory
    return decorate


def backend_kinds() -> list[str]:
    return sorted({*_BUILT_IN, *_REGISTRY})


def is_local_kind(kind: str) -> bool:
    return kind in _LOCAL


def _factory(kind: str) -> Factory:
    if kind in _REGISTRY:
        return _REGISTRY[kind]
    if kind not in _BUILT_IN:
        raise ConfigError(f"backend '{kind}': unknown (available: {', '.join(backend_kinds())})")
    module, name = _BUILT_IN[kind][0].split(":")
    return getattr(importlib.import_module(module), name)


async def build_backend(spec: BackendSpec, context: BuildContext) -> Backend:
    backend = await _factory(spec.kind)(spec, context)
    if not isinstance(backend, Backend):
        raise BackendError(f"backend '{spec.kind}' built {type(backend).__name__}, which lacks info/chat/choice_distribution/aclose")
    return backend
