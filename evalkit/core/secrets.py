"""API keys evalkit has read, and their removal from anything it writes or prints.

A server may echo request headers in an error body; that text then flows into score reasons, error lines
and logs. Every key read from the environment is registered here, and the run files, the terminal and error
messages pass through `scrub`, so no key reaches disk or screen whatever a server sends back.
"""

from __future__ import annotations

import os

_KNOWN: set[str] = set()
MASK = "***"


def api_key_from_env(name: str | None, *, field: str = "api_key_env") -> str | None:
    from evalkit.core.errors import ConfigError

    if name is None:
        return None
    key = os.environ.get(name)
    if not key:
        raise ConfigError(f"{field} {name}: the environment variable {name} is not set")
    register(key)
    return key


def register(secret: str) -> None:
    if len(secret) >= 4:  # a one-letter "key" would scrub ordinary text
        _KNOWN.add(secret)


def scrub(text: str) -> str:
    for secret in _KNOWN:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
