"""Reference replies for reference-based metrics (BLEU, ROUGE, METEOR, emotion accuracy), from local files.

One item is one point in a dialogue where the therapist speaks next: the dialogue so far (its last turn is
the client's), the reference therapist reply, and optionally the annotated emotion. Nothing is downloaded.

`load_reference_items(path)` reads three layouts, told apart by suffix and header:

(a) EmpatheticDialogues CSV (Rashkin et al., 2019; train/valid/test.csv), recognised by the header columns
    conv_id, utterance_idx, speaker_idx and utterance. The files are not RFC-4180 CSV: commas inside a field are
    written as "_comma_" and a double quote is an ordinary character, so each line is split on "," as the
    dataset's own loader (ParlAI) does, and "_comma_" is turned back into ",". Rows are grouped by conv_id and
    ordered by utterance_idx; odd utterance_idx turns are the speaker's (the client), even ones the listener's
    (the therapist). Every listener turn becomes one item: context = the turns before it, reply = that turn,
    emotion = the conversation's `context` column (its emotion label). Item ids are "<conv_id>/<utterance_idx>".
    A ninth field after the eight header columns (ParlAI's inline label candidates) is allowed and ignored;
    a listener turn with no speaker turn right before it (a gap in utterance_idx) gives no item.
(b) JSONL (.jsonl, .ndjson): one object per line with `context` (a string: one client turn; or a list of turns,
    each {"role": "client"|"therapist", "content": ...} - "user"/"assistant" are read as client/therapist - or
    plain strings, which alternate speakers and end with the client), the reply, optional `emotion` and
    optional `id` (default "row-<n>").
(c) Generic CSV (.csv, RFC-4180 quoting): columns context (one client turn), the reply, optional emotion,
    optional id (default "row-<n>").

Accepted column names, for (b) and (c): reply = `reply` | `response` | `reference`; emotion = `emotion` |
`emotion_label`; context = `context` | `input`. Giving two spellings of one column is an error; other
columns/fields are ignored.

Errors are `ConfigError` with one line naming the file, the row (1-based data rows; the header is not a row; for
JSONL the row is the line number) and the column. Files must be UTF-8 (a byte-order mark is allowed).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evalkit.core.errors import ConfigError

EMPATHETIC_DIALOGUES_CITATION = ("Rashkin, H., Smith, E. M., Li, M., & Boureau, Y.-L. (2019). Towards Empathetic "
                                 "Open-domain Conversation Models: a New Benchmark and Dataset. ACL 2019.")
ED_REQUIRED = ("conv_id", "utterance_idx", "context", "speaker_idx", "utterance")
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "reply": ("reply", "response", "reference"),
    "emotion": ("emotion", "emotion_label"),
    "context": ("context", "input"),
    "id": ("id",),
}
ROLE_ALIASES = {"client": "client", "user": "client", "therapist": "therapist", "assistant": "therapist"}


class ReferenceTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["client", "therapist"]
    content: str = Field(min_length=1)

    @field_validator("role", mode="before")
    @classmethod
    def _role_alias(cls, value: Any) -> Any:
        return ROLE_ALIASES.get(value.strip().lower(), value) if isinstance(value, str) else value

    @field_validator("content", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value


class ReferenceItem(BaseModel):
    """The dialogue so far (last turn: the client's), the reference therapist reply, the annotated emotion."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    context: list[ReferenceTurn] = Field(min_length=1)
    reply: str = Field(min_length=1)
    emotion: str | None = None

    @field_validator("id", "reply", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        return value.strip() if isinstance(value, str) else value

    @field_validator("emotion", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("context", mode="before")
    @classmethod
    def _context_forms(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [{"role": "client", "content": value}]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            last = len(value) - 1  # plain strings alternate and end with the client
            return [{"role": "client" if (last - i) % 2 == 0 else "therapist", "content": v} for i, v in enumerate(value)]
        return value

    @field_validator("context")
    @classmethod
    def _last_turn_is_client(cls, turns: list[ReferenceTurn]) -> list[ReferenceTurn]:
        if turns and turns[-1].role != "client":
            raise ValueError("the last context turn must be the client's (the reference reply answers it)")
        return turns


# --------------------------------------------------------------------------------------------------------------
# reading


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 (byte 0x{data[exc.start]:02x} at line {line}); "
                          "re-save the file as UTF-8") from None


def _lines(text: str) -> list[str]:
    """Lines split on newlines only (str.splitlines would also split inside a field at U+2028 and the like)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _error(path: Path, row: int, column: str, message: str, line: int | None = None) -> ConfigError:
    where = f"row {row}" + (f" (line {line})" if line is not None and line != row else "")
    return ConfigError(f"{path}: {where}: column '{column}': {message}")


def _validation_error(path: Path, row: int, exc: ValidationError, line: int | None = None,
                      columns: dict[str, str] | None = None) -> ConfigError:
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if loc and columns:
        loc[0] = columns.get(loc[0], loc[0])
    column = ".".join(loc) or "(row)"
    message = first["msg"].removeprefix("Value error, ")
    return _error(path, row, column, message, line)


def _resolve_columns(path: Path, present: list[str]) -> dict[str, str]:
    """Our field name -> the file's column name, for the columns the file has."""
    found: dict[str, str] = {}
    for field, aliases in COLUMN_ALIASES.items():
        hits = [a for a in aliases if a in present]
        if len(hits) > 1:
            raise ConfigError(f"{path}: columns {' and '.join(repr(h) for h in hits)} both give the {field}; keep one")
        if hits:
            found[field] = hits[0]
    for field in ("context", "reply"):
        if field not in found:
            raise ConfigError(f"{path}: column '{field}' is missing (accepted names: {', '.join(COLUMN_ALIASES[field])})")
    return found


def _item(path: Path, row: int, record: dict[str, Any], columns: dict[str, str], line: int | None = None) -> ReferenceItem:
    data = {field: record.get(column) for field, column in columns.items()}
    if data.get("id") in (None, ""):
        data["id"] = f"row-{row}"
    try:
        return ReferenceItem.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(path, row, exc, line, columns) from None


def _check_unique(path: Path, items: list[ReferenceItem]) -> list[ReferenceItem]:
    if not items:
        raise ConfigError(f"{path}: no items (no rows, or no therapist turn to use as a reference)")
    seen: dict[str, int] = {}
    for number, item in enumerate(items, start=1):
        if item.id in seen:
            raise ConfigError(f"{path}: item id '{item.id}' appears twice (items {seen[item.id]} and {number}); ids must be unique")
        seen[item.id] = number
    return items


def _load_jsonl(path: Path, text: str) -> list[ReferenceItem]:
    items = []
    for number, raw in enumerate(_lines(text), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: row {number}: not valid JSON at column {exc.colno}: {exc.msg}") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{path}: row {number}: expected a JSON object, got {type(record).__name__}")
        try:
            columns = _resolve_columns(path, list(record))
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(f"{path}: ", f"{path}: row {number}: ", 1)) from None
        items.append(_item(path, number, record, columns))
    return _check_unique(path, items)


def _load_generic_csv(path: Path, text: str) -> list[ReferenceItem]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ConfigError(f"{path}: empty file") from None
    except csv.Error as exc:
        raise ConfigError(f"{path}: header: not valid CSV ({exc})") from None
    columns = _resolve_columns(path, header)
    items = []
    number = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ConfigError(f"{path}: row {number + 1} (line {reader.line_num}): not valid CSV ({exc})") from None
        if not any(v.strip() for v in values):
            continue
        number += 1
        if len(values) != len(header):
            column = header[len(values)] if len(values) < len(header) else f"#{len(values)}"
            raise _error(path, number, column, f"row has {len(values)} fields, header has {len(header)}", reader.line_num)
        items.append(_item(path, number, dict(zip(header, values, strict=True)), columns, reader.line_num))
    return _check_unique(path, items)


def _load_empathetic_dialogues(path: Path, text: str) -> list[ReferenceItem]:
    lines = _lines(text)
    header = [h.strip() for h in lines[0].split(",")]
    missing = [name for name in ED_REQUIRED if name not in header]
    if missing:
        raise ConfigError(f"{path}: column '{missing[0]}' is missing (an EmpatheticDialogues CSV has "
                          "conv_id, utterance_idx, context, prompt, speaker_idx, utterance, selfeval, tags)")
    position = {name: header.index(name) for name in ED_REQUIRED}
    conversations: dict[str, list[tuple[int, int, str]]] = {}  # conv_id -> [(utterance_idx, row, utterance)]
    emotions: dict[str, tuple[str, int]] = {}
    number = 0
    for line_no, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        number += 1
        fields = raw.strip().split(",")
        if len(fields) > len(header) + 1:  # one extra field is allowed: ParlAI's inline label candidates
            raise _error(path, number, "(row)", f"{len(fields)} comma-separated fields, header has {len(header)} "
                                                "(a raw comma inside a field? the dataset writes commas as _comma_)", line_no)
        for name in ED_REQUIRED:
            if position[name] >= len(fields):
                raise _error(path, number, name, f"missing (the row has {len(fields)} fields, header has {len(header)})", line_no)
            if not fields[position[name]].strip():
                raise _error(path, number, name, "empty", line_no)
        conv_id = fields[position["conv_id"]].strip()
        try:
            index = int(fields[position["utterance_idx"]])
        except ValueError:
            raise _error(path, number, "utterance_idx", f"not an integer: {fields[position['utterance_idx']]!r}", line_no) from None
        if index < 1:
            raise _error(path, number, "utterance_idx", f"must be 1 or more, got {index}", line_no)
        emotion = fields[position["context"]].strip().replace("_comma_", ",")
        if conv_id in emotions and emotions[conv_id][0] != emotion:
            raise _error(path, number, "context", f"emotion label '{emotion}' differs from '{emotions[conv_id][0]}' "
                                                  f"given for conversation {conv_id} in row {emotions[conv_id][1]}", line_no)
        emotions.setdefault(conv_id, (emotion, number))
        turns = conversations.setdefault(conv_id, [])
        for other_index, other_row, _ in turns:
            if other_index == index:
                raise _error(path, number, "utterance_idx", f"utterance {index} of conversation {conv_id} "
                                                            f"already given in row {other_row}", line_no)
        utterance = fields[position["utterance"]].replace("_comma_", ",").strip()
        turns.append((index, number, utterance))
    items = []
    for conv_id, turns in conversations.items():
        turns.sort()
        context: list[dict[str, str]] = []
        for index, row, utterance in turns:
            role = "client" if index % 2 == 1 else "therapist"
            if role == "therapist" and context and context[-1]["role"] == "client":
                try:
                    items.append(ReferenceItem(id=f"{conv_id}/{index}", context=[ReferenceTurn(**t) for t in context],
                                               reply=utterance, emotion=emotions[conv_id][0]))
                except ValidationError as exc:
                    raise _validation_error(path, row, exc, None, {"reply": "utterance", "context": "utterance"}) from None
            context.append({"role": role, "content": utterance})
    return _check_unique(path, items)


def _is_empathetic_dialogues(text: str) -> bool:
    first = text.split("\n", 1)[0]
    header = {h.strip() for h in first.split(",")}
    return {"conv_id", "utterance_idx", "speaker_idx", "utterance"} <= header


def load_reference_items(path: str | Path) -> list[ReferenceItem]:
    """Read reference items from an EmpatheticDialogues CSV, a generic CSV or a JSONL file (see the module doc)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise ConfigError(f"{path}: unknown format '{suffix or '(no suffix)'}' (expected .csv or .jsonl)")
    text = _read_text(path)
    if not text.strip():
        raise ConfigError(f"{path}: empty file")
    if suffix in (".jsonl", ".ndjson"):
        return _load_jsonl(path, text)
    if _is_empathetic_dialogues(text):
        return _load_empathetic_dialogues(path, text)
    return _load_generic_csv(path, text)
