"""Backends: how evalkit reaches a model. One protocol (`Backend`), one registry (`register_backend`)."""

from evalkit.backends.base import Backend, BackendInfo, BackendSpec, BuildContext, Timeouts, backend_kinds, build_backend, register_backend

__all__ = ["Backend", "BackendInfo", "BackendSpec", "BuildContext", "Timeouts", "backend_kinds", "build_backend",
           "register_backend"]
