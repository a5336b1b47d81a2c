"""Reasoning is thinking, not speech: it is kept in the transcript record and never shown to the other side
of the conversation or to the judge.

vLLM's reasoning parsers return it in a separate field; models served without a parser leave it in the text
as `<think> ... </think>` blocks (also `<thinking>`, `<reasoning>`). A reply that stops while still thinking
(an opening tag without its close) said nothing; a reply with a close tag but no opening one (templates that
open the block in the prompt, e.g. DeepSeek-R1's) thought until that tag.
"""

from __future__ import annotations

import re

_TAGS = "think|thinking|reasoning"
_BLOCK = re.compile(rf"<({_TAGS})>(.*?)</\1>", re.IGNORECASE | re.DOTALL)
_OPEN = re.compile(rf"<({_TAGS})>", re.IGNORECASE)
_CLOSE = re.compile(rf"</({_TAGS})>", re.IGNORECASE)


def split_reasoning(text: str) -> tuple[str, str | None]:
    """(what was said, the reasoning or None)."""
    thoughts = [m.group(2).strip() for m in _BLOCK.finditer(text)]
    rest = _BLOCK.sub("", text)
    close = _CLOSE.search(rest)
    if close and not _OPEN.search(rest[:close.start()]):  # the block was opened by the prompt
        thoughts.insert(0, rest[:close.start()].strip())
        rest = rest[close.end():]
    opening = _OPEN.search(rest)
    if opening:  # still thinking when the reply ended
        thoughts.append(rest[opening.end():].strip())
        rest = rest[:opening.start()]
    reasoning = "\n\n".join(t for t in thoughts if t)
    return rest.strip(), reasoning or (None if not thoughts else "")
