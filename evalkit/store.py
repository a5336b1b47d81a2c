"""A run directory, results/<run-id>/: appends flushed per session, resumable, never overwritten.

A session's transcript line, and all its score rows, are each written with one write and
fsync'd, so a run killed at any point leaves whole lines plus at most one torn tail line,
which the next open cuts off.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from ._yaml import describe_validation_error
from .errors import ConfigError, EvalkitError, RunDirectoryConflict
from .records import ItemScore, Manifest, RunConfig, SessionAdherence, Summary, Transcript

R = TypeVar("R", bound=BaseModel)

MANIFEST, TRANSCRIPTS, SCORES, SUMMARY = "manifest.json", "transcripts.jsonl", "scores.jsonl", "summary.json"
ADHERENCE = "adherence.jsonl"


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line that was being written when the process died."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        handle.truncate(data.rfind(b"\n") + 1)


class ScoreValue(NamedTuple):
    """The part of a score row that summaries need: a few bytes per row, however large the run."""

    rubric: str
    item: str
    valid: bool
    expected: float | None


def iter_jsonl(path: Path, model: type[R]) -> Iterator[R]:
    """Records one at a time, so a run of any size is read in constant memory."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith("\n"):
                return  # torn tail of an interrupted write: not a record
            try:
                yield model.model_validate_json(line)
            except ValidationError as exc:
                raise EvalkitError(describe_validation_error(f"{path}:{number}", exc)) from None


def read_jsonl(path: Path, model: type[R]) -> list[R]:
    return list(iter_jsonl(path, model))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def config_differences(old: RunConfig, new: RunConfig) -> list[str]:
    a, b = old.model_dump(), new.model_dump()
    return [key for key in a if a[key] != b.get(key)]


class RunStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / name

    def existing_manifest(self) -> Manifest | None:
        path = self.path(MANIFEST)
        if not path.exists():
            return None
        try:
            return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise EvalkitError(describe_validation_error(str(path), exc)) from None

    def prepare(self, config: RunConfig, *, resume: bool) -> Manifest | None:
        """Check the directory can take this run; return the manifest of the run it continues, if any."""
        old = self.existing_manifest()
        if old is None:
            if resume:
                raise ConfigError(f"--resume: {self.directory} holds no evalkit run to resume")
            # Logs of a managed server that failed to start are evalkit's own; anything else is the user's.
            ours = lambda p: p.name.startswith("vllm-") and p.suffix == ".log"  # noqa: E731
            if self.directory.exists() and any(not ours(p) for p in self.directory.iterdir()):
                raise RunDirectoryConflict(f"{self.directory} exists and is not an evalkit run; choose another --out")
            self.directory.mkdir(parents=True, exist_ok=True)
            return None
        if old.config != config:
            differs = ", ".join(config_differences(old.config, config))
            raise RunDirectoryConflict(f"{self.directory} holds a run with a different configuration ({differs} differ); "
                                       "choose another --out")
        for name in (TRANSCRIPTS, SCORES, ADHERENCE):
            _cut_torn_tail(self.path(name))
        return old

    def write_manifest(self, manifest: Manifest) -> None:
        _write_atomic(self.path(MANIFEST), manifest.model_dump_json(indent=2))

    def write_summary(self, summary: Summary) -> None:
        _write_atomic(self.path(SUMMARY), summary.model_dump_json(indent=2))

    def iter_transcripts(self) -> Iterator[Transcript]:
        """Each session's transcript once (the first written), streamed from disk."""
        seen: set[str] = set()
        for t in iter_jsonl(self.path(TRANSCRIPTS), Transcript):
            if t.session_id not in seen:
                seen.add(t.session_id)
                yield t

    def transcripts(self) -> dict[str, Transcript]:
        return {t.session_id: t for t in self.iter_transcripts()}

    def sources(self) -> dict[str, str]:
        """session -> persona/utterance id, without keeping the transcripts."""
        return {t.session_id: t.source_id for t in self.iter_transcripts()}

    def _iter_scores(self) -> Iterator[ItemScore]:
        seen: set[tuple[str, str, str]] = set()
        for row in iter_jsonl(self.path(SCORES), ItemScore):
            key = (row.session_id, row.rubric, row.item)
            if key not in seen:
                seen.add(key)
                yield row

    def scores(self) -> dict[str, list[ItemScore]]:
        by_session: dict[str, list[ItemScore]] = defaultdict(list)
        for row in self._iter_scores():
            by_session[row.session_id].append(row)
        return dict(by_session)

    def score_values(self) -> dict[str, list[ScoreValue]]:
        """Like `scores()`, keeping only what a summary needs (no distributions, reasons or judge names)."""
        by_session: dict[str, dict[tuple[str, str], ScoreValue]] = defaultdict(dict)
        for row in iter_jsonl(self.path(SCORES), ItemScore):
            key = (sys.intern(row.rubric), sys.intern(row.item))
            by_session[row.session_id].setdefault(key, ScoreValue(*key, row.valid, row.expected))
        return {sid: list(rows.values()) for sid, rows in by_session.items()}

    def scored_sessions(self) -> set[str]:
        return {row.session_id for row in iter_jsonl(self.path(SCORES), ItemScore)}

    def adherence(self) -> dict[str, SessionAdherence]:
        out: dict[str, SessionAdherence] = {}
        for row in read_jsonl(self.path(ADHERENCE), SessionAdherence):
            out.setdefault(row.session_id, row)
        return out

    def append_adherence(self, row: SessionAdherence) -> None:
        self._append(ADHERENCE, [row])

    def _append(self, name: str, records: list[BaseModel]) -> None:
        if not records:
            return
        payload = "".join(r.model_dump_json() + "\n" for r in records)
        with self.path(name).open("a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())

    def append_transcript(self, transcript: Transcript) -> None:
        self._append(TRANSCRIPTS, [transcript])

    def append_scores(self, rows: list[ItemScore]) -> None:
        self._append(SCORES, rows)


def load_summary(directory: Path) -> Summary:
    path = Path(directory) / SUMMARY
    try:
        return Summary.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvalkitError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (ValidationError, json.JSONDecodeError) as exc:
        raise EvalkitError(f"{path}: not an evalkit summary ({exc})") from None
