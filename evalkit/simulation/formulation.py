"""At the end of a session, the therapist writes a brief case formulation (MentalArena's decoder task).

The request is the session as the therapist saw it plus one instruction, with the reply constrained to a JSON
schema (vLLM structured outputs, or OpenAI's json_schema response format). A reply that is not valid JSON is
kept verbatim in `raw`, and its fields are scored invalid, never guessed.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from evalkit.store.records import Formulation

FIELDS = ("presenting_problem", "relevant_history", "core_beliefs", "intermediate_beliefs", "coping_strategies", "situations",
          "automatic_thoughts", "emotions", "behaviours", "risk")
SCHEMA = {"type": "object", "additionalProperties": False, "required": list(FIELDS),
          "properties": {field: {"type": "string"} for field in FIELDS}}
INSTRUCTION = (
    "The session has ended. For your own case notes, write a brief formulation of this client as you now understand "
    "them, as a JSON object with these fields, each one or two sentences: presenting_problem (what brings them), "
    "relevant_history (past events and circumstances that shaped the difficulty), core_beliefs (their deepest beliefs "
    "about themselves), intermediate_beliefs (their rules, attitudes and assumptions), coping_strategies (how they "
    "habitually protect themselves), situations (what triggers the difficulty), automatic_thoughts (thoughts that come "
    "up in those situations), emotions, behaviours (what they do in those situations), risk (any risk to themselves or "
    "others, or 'none identified').")


def parse(text: str) -> Formulation:
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            return Formulation.model_validate({k: str(v) for k, v in data.items() if k in FIELDS})
    except (ValueError, ValidationError):
        pass
    return Formulation(raw=text)
