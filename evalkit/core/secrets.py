"""API keys evalkit has read, and their removal from anything it writes or prints.

A server may echo request headers in an error body; that text then flows into score reasons, error lines
and logs. Every key read from the environment is registered here, and the run files, the terminal and error
messages pass through `scrub`, so no key reaches disk or screen whatever a server sends back:

- a key is found however it was escaped on the way back: JSON's `\\uXXXX` (any letter case, any number of
  backslashes, i.e. escaped twice) and `\\/`, or URL encoding (`%2F`), character by character;
- the password of any `scheme://user:password@host` URL is masked, registered or not (an endpoint given with
  its credentials must not land in a manifest, an error line or a log).
"""

from __future__ import annotations

import base64
import os
import re

_KNOWN: set[str] = set()
_PATTERNS: dict[str, re.Pattern[str]] = {}
MASK = "***"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@'\"<>]*:)([^@\s/'\"<>]+)(@)")


def api_key_from_env(name: str | None, *, field: str = "api_key_env") -> str | None:
    from evalkit.core.errors import ConfigError

    if name is None:
        return None
    key = os.environ.get(name)
    if not key:
        raise ConfigError(f"{field} {name}: the environment variable {name} is not set")
    register(key)
    return key


def _char(c: str) -> str:
    """One character of a key as it may come back: itself, a JSON \\u escape (escaped once or more), `\\/` for a
    slash, or %XX."""
    code = ord(c)
    forms = [re.escape(c)]
    if code < 0x10000:
        hex4 = f"{code:04x}"
        forms.append(r"\\+u" + "".join(f"[{h}{h.upper()}]" if h.isalpha() else h for h in hex4))
    if c == "/":
        forms.append(r"\\+/")
    if code < 0x80:
        hex2 = f"{code:02x}"
        forms.append("%" + "".join(f"[{h}{h.upper()}]" if h.isalpha() else h for h in hex2))
    return "(?:" + "|".join(forms) + ")"


def register(secret: str) -> None:
    if len(secret) < 4 or secret in _KNOWN:  # a one-letter "key" would scrub ordinary text
        return
    _KNOWN.add(secret)
    _PATTERNS[secret] = re.compile("".join(_char(c) for c in secret))


def register_url(url: str) -> None:
    """The credentials of a `scheme://user:password@host` URL, and their Basic-auth form, as secrets."""
    match = _USERINFO.search(url)
    if not match:
        return
    password = match.group(2)
    user = match.group(1).split("://", 1)[1].rstrip(":")
    register(password)
    register(base64.b64encode(f"{user}:{password}".encode()).decode())


def scrub(text: str) -> str:
    if "://" in text and "@" in text:
        text = _USERINFO.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    escaped = "\\" in text or "%" in text
    for secret in _KNOWN:
        if secret in text:
            text = text.replace(secret, MASK)
        if escaped:
            text = _PATTERNS[secret].sub(MASK, text)
    return text
