"""A run directory being written, from the writer lock to the manifest's last status; `run` and `rescore` share it.

    lifecycle = RunLifecycle(store, command)
    previous = lifecycle.open(config, resume=...)   # refuses a second writer, checks the directory takes this run
    lifecycle.start(manifest)                       # status "running"
    ...                                             # stages append transcripts and scores
    lifecycle.complete(counts)                      # status "complete"
    lifecycle.close()                               # always: releases the lock

`stopped(error)` turns whatever ended the work early into the manifest's "interrupted" status, with counts
read from the files (never zeros beside a full directory), and into the one line the user sees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from evalkit.core.errors import BackendUnavailable, EvalkitError, RunInterrupted, StorageError
from evalkit.store.lock import RunLock
from evalkit.store.records import Manifest, RunConfig, RunCounts
from evalkit.store.rundir import RunDir


class RunLifecycle:
    def __init__(self, store: RunDir, command: list[str]):
        self.store = store
        self.command = command
        self.lock = RunLock(store.directory)
        self.manifest: Manifest | None = None

    def open(self, config: RunConfig, *, resume: bool) -> Manifest | None:
        """Check the directory can take this run, take the writer lock, and return the manifest of the run it continues."""
        self.store.check_target(resume=resume)  # refuse a user's folder before creating anything in it
        self.lock.acquire(self.command)
        return self.store.prepare(config, resume=resume)

    def start(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.store.write_manifest(manifest)

    def complete(self, counts: RunCounts, **update: Any) -> Manifest:
        return self._finish("complete", counts, **update)

    def stopped(self, error: BaseException, *, counts: Callable[[], RunCounts], kept: str = "",
                explain: Callable[[], str | None] = lambda: None, **update: Any) -> BaseException:
        """Record "interrupted" with counts from the files and return the error to raise: one line for the user when
        a backend or the disk failed (re-running the same command continues), else the error itself."""
        if self.manifest is not None:
            try:
                now = counts()
            except (EvalkitError, OSError):  # the files may be what failed; keep the status change at least
                now = None
            self._finish("interrupted", now, **update)
        if isinstance(error, BackendUnavailable):
            return RunInterrupted(f"{explain() or error}{kept}; re-run the same command to continue")
        if isinstance(error, StorageError):
            if self.manifest is not None and not self.store.directory.is_dir():  # it was there: the run started in it
                return RunInterrupted(f"{self.store.directory}: the run directory was removed while the run was writing it "
                                      f"({error}); nothing of it is left to keep: run the same command again to start it anew")
            return RunInterrupted(f"{error}; everything written before is intact, re-run the same command once the problem "
                                  "is solved to continue")
        return error

    def close(self) -> None:
        self.lock.release()

    def _finish(self, status: str, counts: RunCounts | None, **update: Any) -> Manifest:
        """Write the manifest's final status (best effort when the run is failing: the original error matters more)."""
        assert self.manifest is not None
        changes: dict[str, Any] = {"status": status, "ended_at": datetime.now(timezone.utc), **update}
        if counts is not None:
            changes["counts"] = counts
        self.manifest = self.manifest.model_copy(update=changes)
        with contextlib.suppress(StorageError) if status != "complete" else contextlib.nullcontext():
            self.store.write_manifest(self.manifest, last_resort=status != "complete")
        return self.manifest
