"""The simulated client: a persona rendered into a prompt, and the conversation seen from its side.

The client sees, on every turn, what the person would know and what shapes how they talk (demographics,
context, support, goal, history, beliefs, a recent situation, archetype and style described as behaviour);
each disclosure only once it is eligible (after its turn, or earlier when the counsellor asks about its
topic), and it is told which ones are. Risk facts live only in disclosures, and the persona's risk case
notes are never shown to it.
"""

from __future__ import annotations

import re
from functools import cache

import jinja2
from pydantic import BaseModel, ConfigDict, Field

from .._resources import simulators_dir
from .._yaml import load_yaml_model
from ..personas import Persona
from ..records import Turn

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


def counsellor_lines(turns: list[Turn]) -> list[str]:
    return [t.content for t in turns if t.role == "therapist"]


def client_system_prompt(persona: Persona, counsellor_turns: list[str]) -> str:
    """The client's instructions for its next turn, given what the counsellor has said so far (in order)."""
    eligible = persona.eligible(counsellor_turns)
    said = "\n".join(counsellor_turns)
    asked = {d.id for d in eligible if d.after_turn > len(counsellor_turns) and d.asked_in(said)}
    act_lines = [(label, getattr(persona.act_profile, field)) for field, label in ACT_LABELS.items()
                 if getattr(persona.act_profile, field) != "unrated"]
    return _template().render(persona=persona, counsellor_replies=len(counsellor_turns), eligible=eligible, asked=asked,
                              withheld=len(eligible) < len(persona.disclosure), act_lines=act_lines,
                              behaviour=client_behaviour())


def client_messages(persona: Persona, turns: list[Turn]) -> list[dict[str, str]]:
    """The conversation from the client's side: its own turns are 'assistant', the counsellor's are 'user'."""
    messages = [{"role": "system", "content": client_system_prompt(persona, counsellor_lines(turns))},
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
