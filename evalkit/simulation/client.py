"""The simulated client: a persona rendered into a prompt, and the conversation seen from its side.

The client sees, on every turn, what the person would know and what shapes how they talk (demographics,
context, support, goal, history, beliefs, a recent situation, archetype and style described as behaviour);
each disclosure only from its scheduled turn on. The schedule is a function of the turn alone, never of the
counsellor's wording, so every model under test meets the same client: the client's instructions at turn t
are the same whatever the counsellor said. A risk disclosure is voiced in the client's reply right after its
turn, so every model meets the persona's risk at the same point. Risk facts live only in disclosures, and
the persona's risk case notes are never shown to it.
"""

from __future__ import annotations

import re
from functools import cache

import jinja2
from pydantic import BaseModel, ConfigDict, Field

from evalkit.content.personas import Persona
from evalkit.core.resources import simulators_dir
from evalkit.core.yamlio import load_yaml_model
from evalkit.store.records import Turn

END_MARKER = "[END]"
OPENING_CUE = "[The counselling session begins. The counsellor is listening.]"
ACT_LABELS = {
    "experiential_avoidance": "Avoiding painful thoughts and feelings",
    "cognitive_fusion": "Taking your thoughts as literal truth",
    "present_moment_contact": "Noticing what is happening right now",
    "self_as_content": "Defining yourself by your story and labels",
    "values_clarity": "Knowing what matters to you",
    "committed_action": "Acting on what matters despite discomfort",
}


class ClientBehaviour(BaseModel):
    """simulators/client-behaviour.yaml: how each archetype, style and openness level behaves in a session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    references: list[str] = Field(min_length=1)
    archetypes: dict[str, str]
    styles: dict[str, str]
    openness: dict[str, str]


@cache
def client_behaviour() -> ClientBehaviour:
    return load_yaml_model(simulators_dir() / "client-behaviour.yaml", ClientBehaviour)


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(simulators_dir() / "templates"),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("client.md.j2")


def counsellor_replies(turns: list[Turn]) -> int:
    return sum(t.role == "therapist" for t in turns)


def client_system_prompt(persona: Persona, replies: int) -> str:
    """The client's instructions for its reply after the counsellor's `replies`-th reply: a function of the turn only."""
    eligible = persona.eligible(replies)
    due = {d.id for d in persona.due(replies)}
    act_lines = [(label, getattr(persona.act_profile, field)) for field, label in ACT_LABELS.items()
                 if getattr(persona.act_profile, field) != "unrated"]
    return _template().render(persona=persona, counsellor_replies=replies, eligible=eligible, due=due,
                              withheld=len(eligible) < len(persona.disclosure), act_lines=act_lines,
                              behaviour=client_behaviour())


def client_messages(persona: Persona, turns: list[Turn]) -> list[dict[str, str]]:
    """The conversation from the client's side: its own turns are 'assistant', the counsellor's are 'user'."""
    messages = [{"role": "system", "content": client_system_prompt(persona, counsellor_replies(turns))},
                {"role": "user", "content": OPENING_CUE}]
    messages += [{"role": "assistant" if t.role == "client" else "user", "content": t.content} for t in turns]
    return messages


def therapist_messages(system_prompt: str, turns: list[Turn]) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}]
    messages += [{"role": "user" if t.role == "client" else "assistant", "content": t.content} for t in turns]
    return messages


_SPEAKER_LABEL = re.compile(r"^\s*(client|patient|me)\s*:\s*", re.IGNORECASE)


def clean_client_reply(text: str) -> tuple[str, bool]:
    """Strip a leading speaker label and the end marker; say whether the client closed the session."""
    closed = END_MARKER in text
    text = _SPEAKER_LABEL.sub("", text.replace(END_MARKER, "")).strip()
    return text, closed
