"""Roles (therapist, client, judge): which model plays each, and the backends that reach them.

One backend per distinct model; managed vLLM servers are owned here and stopped on close.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.markup import escape

from .backends.base import Backend, BackendInfo
from .backends.openai_http import OpenAIBackend
from .backends.replicas import ReplicaPool, console_warning
from .backends.transformers_local import TransformersBackend
from .backends.vllm_server import ManagedVLLMServer, tail
from .errors import ConfigError, ModelNotFound
from .progress import console
from .provenance import hash_model_dir

ROLES = ("therapist", "client", "judge")
BackendKind = Literal["auto", "openai", "vllm", "vllm-offline", "transformers"]
RoleKind = Literal["openai", "vllm-managed", "vllm-offline", "transformers"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class RoleSpec:
    """Which model plays a role, and how it is reached."""

    model: str | None = None
    endpoint: str | None = None
    api_key_env: str | None = None
    backend: BackendKind = "auto"
    more_endpoints: tuple[str, ...] = ()
    """Further replicas serving the same model as `endpoint`."""

    @classmethod
    def of(cls, model: str | None, endpoints: list[str] | None, api_key_env: str | None = None,
           backend: BackendKind = "auto") -> RoleSpec:
        """From a repeatable --endpoint option."""
        first, *more = endpoints or [None]
        return cls(model, first, api_key_env, backend, tuple(more))  # type: ignore[arg-type]

    @property
    def given(self) -> bool:
        return self.model is not None or self.endpoint is not None

    @property
    def replicated(self) -> bool:
        return bool(self.more_endpoints)

    def resolved_kind(self, flag: str) -> RoleKind:
        if self.backend in ("transformers", "vllm-offline"):
            if self.endpoint:
                raise ConfigError(f"--{flag}backend {self.backend} runs the model in-process; drop --{flag}endpoint")
            return self.backend  # type: ignore[return-value]
        if self.endpoint or self.backend == "openai":
            if not self.endpoint:
                raise ConfigError(f"--{flag}backend openai needs --{flag}endpoint")
            return "openai"
        return "vllm-managed"


@dataclass
class Role:
    spec: RoleSpec
    kind: RoleKind
    identity: str
    model_path: Path | None = None
    model_hash: str | None = None
    defaulted: bool = False
    backend: Backend | None = None


def check_model_path(model: str, flag: str) -> Path | None:
    """A local model directory, or None for a hub id; anything else is a user error."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFound(f"--{flag}model {model}: not a directory (expected a model folder with config.json)")
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"--{flag}model {model}: not a model directory (no config.json)")
        try:
            (path / "config.json").read_bytes()
        except OSError as exc:
            raise ModelNotFound(f"--{flag}model {model}: cannot read config.json ({exc.strerror})") from None
        return path.resolve()
    if _HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        return None
    raise ModelNotFound(f"--{flag}model {model}: no such directory")


def _served_name(path: Path | None, model: str) -> str:
    return path.name if path else model


class Backends:
    """Builds one backend per distinct model and owns the managed servers behind them."""

    def __init__(self, run_dir: Path, *, max_model_len: int | None, vllm_args: list[str], trust_remote_code: bool):
        self.run_dir = run_dir
        self.max_model_len = max_model_len
        self.vllm_args = vllm_args
        self.trust_remote_code = trust_remote_code
        self.servers: dict[str, ManagedVLLMServer] = {}
        self._by_identity: dict[str, Backend] = {}

    async def build(self, role: Role) -> Backend:
        if role.identity in self._by_identity:
            return self._by_identity[role.identity]
        spec = role.spec
        if role.kind == "openai" and spec.replicated:
            backend: Backend = await ReplicaPool.connect([spec.endpoint, *spec.more_endpoints], spec.model,  # type: ignore[list-item]
                                                         api_key_env=spec.api_key_env, warn=console_warning)
        elif role.kind == "openai":
            backend = await OpenAIBackend.connect(spec.endpoint, spec.model, api_key_env=spec.api_key_env)  # type: ignore[arg-type]
        else:
            backend = await self._local(role)
        self._by_identity[role.identity] = backend
        return backend

    async def _local(self, role: Role) -> Backend:
        """A model on this machine: in-process (transformers, vLLM) or a managed vLLM server."""
        source = str(role.model_path or role.spec.model)
        name = _served_name(role.model_path, role.spec.model)  # type: ignore[arg-type]
        info = BackendInfo(kind=role.kind, model=name, model_path=source, model_hash=role.model_hash)
        if role.kind == "transformers":
            return TransformersBackend(source, served_name=name, trust_remote_code=self.trust_remote_code, info=info)
        if role.kind == "vllm-offline":
            from .backends.vllm_offline import OfflineVLLMBackend

            console.print(f"loading [bold]{escape(name)}[/bold] into vLLM in-process")
            return OfflineVLLMBackend(source, info=info, vllm_args=self.vllm_args, max_model_len=self.max_model_len,
                                      trust_remote_code=self.trust_remote_code)
        server = ManagedVLLMServer(source, served_name=name, log_path=self.run_dir / f"vllm-{name}.log",
                                   max_model_len=self.max_model_len, extra_args=self.vllm_args)
        console.print(f"starting vLLM {server.version or ''} for [bold]{escape(name)}[/bold] (log: {server.log_path})")
        server.start()  # blocks the loop on purpose: nothing else runs yet, and it must be the main thread
        self.servers[role.identity] = server
        backend = await OpenAIBackend.connect(server.url, name, kind="vllm-managed")
        backend.info.model_path, backend.info.model_hash = source, role.model_hash
        return backend

    def explain_failure(self) -> str:
        dead = [(s.served_name, s) for s in self.servers.values() if s.process and s.process.poll() is not None]
        return "; ".join(f"vLLM for {name} exited with code {s.process.returncode}: {tail(s.log_path, 3)}"  # type: ignore[union-attr]
                         for name, s in dead)

    async def close(self) -> None:
        for backend in self._by_identity.values():
            await backend.aclose()
        for server in self.servers.values():
            server.stop()


def resolve_roles(specs: dict[str, RoleSpec]) -> tuple[dict[str, Role], list[str]]:
    warnings = []
    therapist = specs["therapist"]
    if not therapist.given:
        raise ConfigError("--model (or --endpoint) is required: which model is under test?")
    roles: dict[str, Role] = {}
    for name in ROLES:
        spec, defaulted = specs.get(name) or RoleSpec(), False
        if not spec.given:
            spec, defaulted = therapist, True
        flag = "" if name == "therapist" else f"{name}-"
        kind = spec.resolved_kind(flag)
        path = check_model_path(spec.model, flag) if spec.model and kind != "openai" else None
        identity = f"{kind}:{path or spec.model}" if kind != "openai" else _endpoint_identity(spec, spec.model)
        roles[name] = Role(spec=spec, kind=kind, identity=identity, model_path=path, defaulted=defaulted)
    if roles["client"].defaulted:
        warnings.append("self-play: the simulated client is the model under test (give --client-model or --client-endpoint)")
    if roles["judge"].defaulted:
        warnings.append("self-judged: the judge is the model under test; its scores are not an independent rating "
                        "(give --judge-model or --judge-endpoint)")
    hashes: dict[Path, str] = {}
    for role in roles.values():
        if role.model_path is not None:
            if role.model_path not in hashes:
                hashes[role.model_path] = hash_model_dir(role.model_path)
            role.model_hash = hashes[role.model_path]
    return roles, warnings


def role_identity(role: Role, backend: Backend) -> str:
    """How runs and validation reports name a role's model: its content hash, or endpoint and served name."""
    if role.model_hash:
        return role.model_hash
    return _endpoint_identity(role.spec, backend.info.model) if role.kind == "openai" else role.identity


def _endpoint_identity(spec: RoleSpec, model: str | None) -> str:
    # Replicas are interchangeable, so a run may be resumed on a different set of them.
    return f"openai:replicas:{model or ''}" if spec.replicated else f"openai:{spec.endpoint}:{model or ''}"


@asynccontextmanager
async def judge_backend(spec: RoleSpec, log_dir: Path) -> AsyncIterator[tuple[Backend, str]]:
    """One backend for a judge outside a run (pairwise preference, validation, preference accuracy),
    with its identity; a managed server is stopped on exit."""
    role = resolve_roles({"therapist": spec})[0]["therapist"]
    backends = Backends(log_dir, max_model_len=None, vllm_args=[], trust_remote_code=False)
    try:
        backend = await backends.build(role)
        yield backend, role_identity(role, backend)
    finally:
        await backends.close()

