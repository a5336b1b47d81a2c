"""The simulated client: a persona rendered into a prompt, and the conversation seen from its side."""

from __future__ import annotations

import re
from functools import cache

import jinja2

from .._resources import simulators_dir
from ..personas import Persona
from ..records import Turn

END_MARKER = "[END]"

STYLES = {
    "plain": "You speak plainly and answer what you are asked, without much elaboration.",
    "verbose": "You over-explain: long run-on answers with lots of detail and qualifications.",
    "tangential": "You drift onto side topics and anecdotes and sometimes lose the thread of the question.",
    "hostile": "You are curt and sceptical, challenge the counsellor and doubt this will help.",
    "guarded": "You give short, careful answers and reveal little unless you feel safe.",
    "ingratiating": "You are eager to please, compliment the counsellor and play down your own problems.",
}
OPENNESS = {
    "low": "you share very little and only when asked directly and gently.",
    "moderate": "you share when asked, a piece at a time.",
    "high": "you share readily, sometimes more than you were asked.",
}
OPENING_CUE = "[The counselling session begins. The counsellor is listening.]"
ACT_LABELS = {
    "experiential_avoidance": "Avoiding painful thoughts and feelings",
    "cognitive_fusion": "Taking your thoughts as literal truth",
    "present_moment_contact": "Noticing what is happening right now",
    "self_as_content": "Defining yourself by your story and labels",
    "values_clarity": "Knowing what matters to you",
    "committed_action": "Acting on what matters despite discomfort",
}


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(simulators_dir() / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("client.md.j2")


def client_system_prompt(persona: Persona, therapist_turns: int) -> str:
    """The client's instructions for its next turn; disclosures unlock as the counsellor replies."""
    shareable = [d for d in persona.disclosure if d.after_turn <= therapist_turns]
    withheld = len(shareable) < len(persona.disclosure)
    act_lines = [(label, getattr(persona.act_profile, field)) for field, label in ACT_LABELS.items()
                 if getattr(persona.act_profile, field) != "unrated"]
    return _template().render(persona=persona, therapist_turns=therapist_turns, shareable=shareable,
                              withheld=withheld, styles=STYLES, openness=OPENNESS, act_lines=act_lines)


def client_messages(persona: Persona, turns: list[Turn]) -> list[dict[str, str]]:
    """The conversation from the client's side: its own turns are 'assistant', the counsellor's are 'user'."""
    therapist_turns = sum(t.role == "therapist" for t in turns)
    messages = [{"role": "system", "content": client_system_prompt(persona, therapist_turns)},
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
