"""Roles (therapist, client, judge): which model plays each, and the backends that reach them.

A user gives a role as a `RoleConfig` (model, endpoints, key variable, backend kind, timeouts: the one exported
role type, validated like every input) or as a ready backend object; `RoleSpec` is its resolved form inside.
Roles that name the same model share one backend; managed servers are owned by the
`RoleBackends` that built them and stopped when it closes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from evalkit.backends.base import Backend, BackendSpec, BuildContext, Timeouts, backend_kinds, build_backend, is_local_kind
from evalkit.core.errors import BackendError, ConfigError, ModelNotFound
from evalkit.core.provenance import hash_model_dir
from evalkit.core.types import ROLES, RoleName

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class RoleSpec:
    """Which model plays a role, and how it is reached.

    `model`: a local checkpoint path or hub id (run by a local kind), or the served name at `endpoint`.
    `endpoint`: one URL or several replicas of the same model. `backend`: a registered kind, or "auto"
    (openai with an endpoint, else a managed vLLM server). `instance`: a ready backend object instead.
    """

    model: str | None = None
    endpoint: str | tuple[str, ...] | list[str] | None = None
    api_key_env: str | None = None
    backend: str = "auto"
    instance: Backend | None = field(default=None, compare=False)
    timeouts: Timeouts = Timeouts()
    options: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        endpoints = (self.endpoint,) if isinstance(self.endpoint, str) else tuple(self.endpoint or ())
        object.__setattr__(self, "endpoint", endpoints)
        if self.backend == "vllm-managed":  # the old name of the managed kind
            object.__setattr__(self, "backend", "vllm")

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.endpoint  # type: ignore[return-value]

    @property
    def given(self) -> bool:
        return self.instance is not None or self.model is not None or bool(self.endpoints)

    def kind(self) -> str:
        if self.instance is not None:
            return self.instance.info.kind
        if self.backend == "auto":
            return "openai" if self.endpoints else "vllm"
        if is_local_kind(self.backend) and self.endpoints:
            raise ConfigError(f"backend '{self.backend}' runs the model on this machine; it takes no endpoint")
        if self.backend == "openai" and not self.endpoints:
            raise ConfigError("backend 'openai' needs an endpoint")
        return self.backend


@dataclass
class Role:
    name: RoleName
    spec: RoleSpec
    kind: str
    model_path: Path | None = None
    model_hash: str | None = None
    defaulted: bool = False
    backend: Backend | None = None

    @property
    def identity(self) -> str:
        """How runs name this role's model: its content hash, or kind, endpoint and served name."""
        if self.model_hash:
            return self.model_hash
        if self.backend is not None and self.backend.info.model_hash:
            return self.backend.info.model_hash
        model = self.backend.info.model if self.backend is not None else self.spec.model
        if self.kind == "openai":
            where = "replicas" if len(self.spec.endpoints) > 1 else normalise_endpoint(self.spec.endpoints[0])
            return f"openai:{where}:{model or ''}"
        return f"{self.kind}:{model or ''}"


def normalise_endpoint(url: str) -> str:
    """One spelling per server: lower-case scheme and host, localhost as 127.0.0.1, no trailing /v1 or slash."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    host = "127.0.0.1" if host in ("localhost", "::1", "[::1]") else host
    port = f":{parts.port}" if parts.port else ""
    path = parts.path.rstrip("/").removesuffix("/v1")
    return f"{parts.scheme.lower()}://{host}{port}{path}"


def check_model_path(model: str, field: str) -> Path | None:
    """A local model directory, or None for a hub id; anything else is a user error."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFound(f"{field} {model}: not a directory (expected a model folder with config.json)")
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{field} {model}: not a model directory (no config.json)")
        try:
            (path / "config.json").read_bytes()
        except OSError as exc:
            raise ModelNotFound(f"{field} {model}: cannot read config.json ({exc.strerror})") from None
        return path.resolve()
    if _HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        return None
    raise ModelNotFound(f"{field} {model}: no such directory")


def resolve_roles(specs: dict[str, RoleSpec]) -> dict[RoleName, Role]:
    """Bind each role to a spec (defaulting to the therapist's), check local paths and hash them."""
    therapist = specs.get("therapist") or RoleSpec()
    if not therapist.given:
        raise ConfigError("therapist model: required (which model is under test?)")
    roles: dict[RoleName, Role] = {}
    hashes: dict[Path, str] = {}
    for name in ROLES:
        spec, defaulted = specs.get(name) or RoleSpec(), False
        if not spec.given:
            spec, defaulted = therapist, True
        kind = spec.kind()
        if spec.instance is None and kind not in backend_kinds():  # before any directory or server exists
            raise ConfigError(f"{name}.backend: '{kind}' is not a backend (available: {', '.join(backend_kinds())})")
        path = None
        if spec.instance is None and is_local_kind(kind):
            if not spec.model:
                raise ConfigError(f"{name} model: backend '{kind}' needs a model path or id")
            path = check_model_path(spec.model, f"{name} model")
        role = Role(name=name, spec=spec, kind=kind, model_path=path, defaulted=defaulted)
        if path is not None:
            role.model_hash = hashes.setdefault(path, hash_model_dir(path))
        roles[name] = role
    return roles


def self_play_warnings(roles: dict[RoleName, Role], *, has_client: bool, has_judge: bool = True) -> tuple[bool, bool, list[str]]:
    """(self_play, self_judged, warnings), decided by the models' identities, not by which flags were given.
    `has_client`/`has_judge`: whether a simulated client / an LLM judge takes part at all."""
    therapist = roles["therapist"].identity
    self_play = has_client and roles["client"].identity == therapist
    self_judged = has_judge and roles["judge"].identity == therapist
    warnings = []
    if self_play:
        warnings.append("self-play: the simulated client is the model under test (give a different client model or endpoint)")
    if self_judged:
        warnings.append("self-judged: the judge is the model under test; its scores are not an independent rating "
                        "(give a different judge model or endpoint)")
    return self_play, self_judged, warnings


class RoleBound:
    """A backend as one role sees it: every error it raises names the role (therapist, client or judge)."""

    def __init__(self, backend: Backend, role: str):
        self.backend, self.role = backend, role

    @property
    def info(self):
        return self.backend.info

    async def chat(self, messages, params):
        try:
            return await self.backend.chat(messages, params)
        except BackendError as exc:
            raise exc.for_role(self.role) from None

    async def choice_distribution(self, messages, choices, *, with_mass: bool = True):
        try:
            return await self.backend.choice_distribution(messages, choices, with_mass=with_mass)
        except BackendError as exc:
            raise exc.for_role(self.role) from None

    async def aclose(self) -> None:
        return None  # the backend is closed by its owner, once, however many roles share it


class RoleBackends:
    """Builds one backend per distinct model and owns what they started (managed servers, in-process engines)."""

    def __init__(self, context: BuildContext):
        self.context = context
        self._built: dict[tuple, Backend] = {}
        self._owned: list[Backend] = []

    async def bind(self, role: Role) -> Backend:
        spec = role.spec
        if spec.instance is not None:
            role.backend = RoleBound(spec.instance, role.name)
            return role.backend
        key = (role.kind, str(role.model_path or spec.model), spec.endpoints, spec.api_key_env)
        if key not in self._built:
            model = str(role.model_path) if role.model_path else spec.model
            try:
                backend = await build_backend(BackendSpec(kind=role.kind, model=model, endpoints=spec.endpoints,
                                                          api_key_env=spec.api_key_env, model_hash=role.model_hash,
                                                          timeouts=spec.timeouts, options=spec.options), self.context)
            except BackendError as exc:
                raise exc.for_role(role.name) from None
            self._built[key] = backend
            self._owned.append(backend)
        role.backend = RoleBound(self._built[key], role.name)
        return role.backend

    def explain_failure(self) -> str:
        return "; ".join(why for explain in self.context.failure_explainers if (why := explain()))

    async def close(self, *, stop_servers: bool = True) -> None:
        """Close the backends built here; stop what the context started unless it is shared with later runs."""
        for backend in self._owned:
            try:
                await backend.aclose()
            except Exception:  # noqa: BLE001 - closing must not hide the error that ended the run
                pass
        while stop_servers and self.context.closers:
            self.context.closers.pop()()


def as_role_spec(value: RoleConfig | RoleSpec | Backend) -> RoleSpec:
    """Any way a role can be given, resolved."""
    if isinstance(value, RoleSpec):
        return value
    return value.role_spec() if isinstance(value, RoleConfig) else RoleSpec(instance=value)


@asynccontextmanager
async def judge_backend(spec: RoleConfig | RoleSpec | Backend, log_dir: Path) -> AsyncIterator[tuple[Backend, str]]:
    """One backend for a judge outside a run (pairwise preference, validation, preference accuracy), with its
    identity; whatever it started is stopped on exit."""
    role = resolve_roles({"therapist": as_role_spec(spec)})["therapist"]
    role.name = "judge"
    backends = RoleBackends(BuildContext(log_dir=log_dir))
    try:
        await backends.bind(role)
        yield role.backend, role.identity  # type: ignore[misc]
    finally:
        await backends.close()


class RoleConfig(BaseModel):
    """Which model plays a role and how it is reached (one of model / endpoint, or both: served name at endpoint)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, min_length=1, description="local path, hub id, or the served name at endpoint")
    endpoint: list[str] = Field([], description="OpenAI-compatible endpoint(s); several are replicas of one model")
    api_key_env: str | None = Field(None, min_length=1, description="environment variable that holds the endpoint's API key")
    backend: str = Field("auto", description="auto, openai, vllm, vllm-offline, transformers, mock, or a registered kind")
    timeout_connect: float = Field(10.0, gt=0, le=3600)
    timeout_first_byte: float = Field(120.0, gt=0, le=86400, description="seconds until a reply starts (non-streamed: the whole reply)")
    timeout_total: float = Field(150.0, gt=0, le=86400, description="seconds for one request attempt")
    timeout_deadline: float = Field(180.0, gt=0, le=86400, description="seconds for one request including retries and Retry-After waits")

    @field_validator("endpoint", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else (value or [])

    @field_validator("api_key_env")
    @classmethod
    def _key_needs_endpoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and not info.data.get("endpoint"):
            raise ValueError(f"{value} would never be sent (a key goes to an endpoint, and this role has none: it is served here)")
        return value

    @property
    def given(self) -> bool:
        return self.model is not None or bool(self.endpoint)

    def role_spec(self) -> RoleSpec:
        """The resolved form. The deadline bounds everything: a total or first-byte limit longer than it is capped at it."""
        deadline = self.timeout_deadline
        timeouts = Timeouts(connect=min(self.timeout_connect, deadline), first_byte=min(self.timeout_first_byte, deadline),
                            total=min(self.timeout_total, deadline), deadline=deadline)
        return RoleSpec(model=self.model, endpoint=tuple(self.endpoint), api_key_env=self.api_key_env, backend=self.backend,
                        timeouts=timeouts)
