"""A run directory, results/<run-id>/: the one reader and writer every stage uses.

    manifest.json        what ran, with which models and configuration, and how far it got
    inputs/              the resolved suite, rubrics and personas/utterances the run used (self-contained)
    transcripts.jsonl    one session per line
    scores.jsonl         one row per session x scorer item; appended, the latest row of a key wins
    summary.json         per item and composite statistics
    report.html, scores.parquet, gate.json, ...

Appends are whole lines, fsync'd; a crash leaves at most one torn tail line, cut on the next open. A session
counts as scored only when every row its scorers expect is present, so a resume writes exactly what is
missing. Reading never depends on what evalkit has installed now: rubrics and personas come from inputs/.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

from evalkit.core.errors import ConfigError, EvalkitError, RunDirectoryConflict, StorageError
from evalkit.core.fileio import (
    append_lines,
    check_utf8_path,
    ensure_directory,
    iter_jsonl,
    overwrite_in_place,
    read_model,
    repair_tail,
    write_atomic,
)
from evalkit.store.records import ItemScore, Manifest, RunConfig, Summary, Transcript

MANIFEST, TRANSCRIPTS, SCORES, SUMMARY, INPUTS = "manifest.json", "transcripts.jsonl", "scores.jsonl", "summary.json", "inputs"
_OURS = ("vllm-", "report", "gate", "scores.", "sessions.", "summary", "comparison", "pairwise", ".")


_INPUT_FILES = ("suite.json", "rubrics.json", "sources.jsonl")


def _ours(path: Path) -> bool:
    if path.name == INPUTS and path.is_dir():
        return all(p.name in _INPUT_FILES or p.name.startswith(".") for p in path.iterdir())
    return path.name.startswith(_OURS)


class ScoreFields(Protocol):
    """What summaries and checks read from a score row; both ScoreValue and the stored ItemScore have it."""

    @property
    def rubric(self) -> str: ...
    @property
    def item(self) -> str: ...
    @property
    def valid(self) -> bool: ...
    @property
    def expected(self) -> float | None: ...


class ScoreValue(NamedTuple):
    """The part of a score row that summaries need: a few bytes per row, however large the run."""

    rubric: str
    item: str
    valid: bool
    expected: float | None


def config_differences(old: RunConfig, new: RunConfig) -> list[str]:
    a, b = old.model_dump(), new.model_dump()
    return [key for key in a if a[key] != b.get(key)]


def _reason_kind(reason: str) -> str:
    """A reason with its figures blanked, so 'carried only 3.1%' and 'carried only 7.4%' count as one kind."""
    import re

    return re.sub(r"\d+(\.\d+)?", "#", reason)[:160]


def find_runs(root: str | Path) -> Iterator[tuple[Path, Manifest]]:
    """Every evalkit run directory under `root` (its manifest read), newest first; unreadable manifests are skipped."""
    found = []
    for manifest_path in Path(root).glob("**/" + MANIFEST):
        try:
            found.append((manifest_path.parent, read_model(manifest_path, Manifest, what="run manifest")))
        except EvalkitError:
            continue
    yield from sorted(found, key=lambda pair: pair[1].started_at, reverse=True)


class RunDir:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @property
    def name(self) -> str:
        return self.directory.name

    def path(self, name: str) -> Path:
        return self.directory / name

    # ------------------------------------------------------------------ reading

    def manifest(self) -> Manifest | None:
        path = self.path(MANIFEST)
        if not path.exists():
            return None
        return read_model(path, Manifest, what="run manifest")

    def require_manifest(self) -> Manifest:
        if not self.directory.is_dir():
            raise ConfigError(f"{self.directory}: not a directory (expected an evalkit run)")
        manifest = self.manifest()
        if manifest is None:
            raise ConfigError(f"{self.directory}: not an evalkit run (no manifest.json)")
        return manifest

    def suite(self):
        """The suite, rubrics and personas/utterances this run used, from its own copy in inputs/."""
        from evalkit.content.suites import LoadedSuite, load_suite

        if self.path(INPUTS).is_dir():
            return LoadedSuite.from_inputs(self.path(INPUTS))
        # Runs written before runs were self-contained: the built-in suite, if it is the same version.
        manifest = self.require_manifest()
        ref = manifest.config.suite
        loaded = load_suite(ref.id)
        if loaded.content_hash != ref.sha256:
            raise EvalkitError(f"{self.directory}: the run has no inputs/ folder and the installed suite '{ref.id}' "
                               "differs from the one it used; re-run it with this evalkit to read it")
        return loaded

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

    def iter_scores(self) -> Iterator[ItemScore]:
        """Every score row as written (re-judged keys appear more than once; see `scores`)."""
        return iter_jsonl(self.path(SCORES), ItemScore)

    def scores(self) -> dict[str, list[ItemScore]]:
        """session -> its rows, the latest row of each (rubric, item) winning (a re-judged row supersedes)."""
        latest: dict[str, dict[tuple[str, str], ItemScore]] = defaultdict(dict)
        for row in self.iter_scores():
            latest[row.session_id][(row.rubric, row.item)] = row
        return {sid: list(rows.values()) for sid, rows in latest.items()}

    def score_values(self) -> dict[str, list[ScoreValue]]:
        """Like `scores()`, keeping only what a summary needs (no distributions, reasons or judge names)."""
        latest: dict[str, dict[tuple[str, str], ScoreValue]] = defaultdict(dict)
        for row in self.iter_scores():
            key = (sys.intern(row.rubric), sys.intern(row.item))
            latest[row.session_id][key] = ScoreValue(*key, row.valid, row.expected)
        return {sid: list(rows.values()) for sid, rows in latest.items()}

    def invalid_reasons(self, top: int = 5) -> dict[str, int]:
        """The most frequent reasons among the latest rows that are invalid (numbers in a reason are kept: they say how
        far off a reading was, so near-identical reasons are grouped by their text up to the first digit)."""
        latest: dict[tuple[str, str, str], str | None] = {}
        for row in self.iter_scores():
            latest[(row.session_id, row.rubric, row.item)] = None if row.valid else sys.intern(row.reason or "no reason given")
        counts: dict[str, int] = defaultdict(int)
        for reason in latest.values():
            if reason is not None:
                counts[_reason_kind(reason)] += 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:top])

    def written_keys(self) -> dict[str, dict[tuple[str, str], bool]]:
        """session -> (rubric, item) -> whether its latest row is valid."""
        out: dict[str, dict[tuple[str, str], bool]] = defaultdict(dict)
        for row in self.iter_scores():
            out[row.session_id][(row.rubric, row.item)] = row.valid
        return out

    def summary(self) -> Summary:
        return read_model(self.path(SUMMARY), Summary, what="summary")

    # ------------------------------------------------------------------ writing

    def check_target(self, *, resume: bool) -> None:
        """Refuse, before anything is written, a path that cannot hold this run: a file, a user's own folder, or
        (`resume`) a folder with no run in it."""
        check_utf8_path(self.directory, "output directory")
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"output directory {self.directory}: is a file, not a directory")
        if self.path(MANIFEST).exists():
            return
        if resume:
            raise ConfigError(f"resume: {self.directory} holds no evalkit run to resume")
        # Logs of a managed server that failed to start, inputs/ of a run cut off before its manifest, or the
        # writer lock are evalkit's own; anything else is the user's.
        if self.directory.exists() and any(not _ours(p) for p in self.directory.iterdir()):
            raise RunDirectoryConflict(f"{self.directory} exists and is not an evalkit run; choose another output directory")

    def prepare(self, config: RunConfig, *, resume: bool) -> Manifest | None:
        """Check the directory can take this run (call it holding the writer lock); return the manifest of the run
        it continues, if any."""
        self.check_target(resume=resume)
        old = self.manifest() if self.directory.is_dir() else None
        if old is None:
            ensure_directory(self.directory)
            return None
        if old.config != config:
            differs = ", ".join(config_differences(old.config, config))
            raise RunDirectoryConflict(f"{self.directory} holds a run with a different configuration ({differs} differ); "
                                       "choose another output directory")
        for name in (TRANSCRIPTS, SCORES):
            repair_tail(self.path(name))
        # Read both files through once, so a corrupt record stops the resume before anything is rewritten.
        for _ in self.iter_transcripts():
            pass
        for _ in self.iter_scores():
            pass
        return old

    def write_inputs(self, loaded) -> None:
        loaded.dump(self.path(INPUTS))

    def write_manifest(self, manifest: Manifest, *, last_resort: bool = False) -> None:
        """`last_resort`: if the disk is too full for a new file, rewrite the old manifest in its own space."""
        text = manifest.model_dump_json(indent=2)
        try:
            write_atomic(self.path(MANIFEST), text, make_parents=False)  # a removed run directory is not made again
        except StorageError:
            if not (last_resort and self.path(MANIFEST).exists()):
                raise
            overwrite_in_place(self.path(MANIFEST), text)

    def write_summary(self, summary: Summary) -> None:
        write_atomic(self.path(SUMMARY), summary.model_dump_json(indent=2), make_parents=False)

    def append_transcript(self, transcript: Transcript) -> None:
        append_lines(self.path(TRANSCRIPTS), [transcript.model_dump_json()])

    def append_scores(self, rows: Iterable[ItemScore]) -> None:
        append_lines(self.path(SCORES), [r.model_dump_json() for r in rows])

