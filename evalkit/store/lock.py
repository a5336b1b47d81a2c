"""One writer per run directory.

Every command that writes into a run (run, resume, rescore) holds an exclusive `flock` on `<run>/.evalkit.lock`
while it works. A second writer is refused at once with one line naming the holder (pid, host, start, command).
The kernel drops the lock when its process ends, however it ends (even SIGKILL), so a lock left by a killed
process is simply taken over: the file's holder record is then stale and is overwritten. The descriptor is not
inherited by child processes (Python opens files non-inheritable), so a vLLM server evalkit started cannot keep
a dead run locked. On a network filesystem whose `flock` is local to each host, two hosts can still write one
run: keep run directories on local disk, or give each host its own `--out`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

from evalkit.core.errors import RunLocked, StorageError
from evalkit.core.fileio import ensure_directory
from evalkit.core.secrets import scrub

LOCK = ".evalkit.lock"


class RunLock:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK
        self._fd: int | None = None

    def acquire(self, command: list[str] | None = None) -> RunLock:
        """Take the lock (creating the directory), or raise RunLocked naming who holds it."""
        ensure_directory(self.directory, "output directory")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot create the run's lock file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLocked(f"{self.directory}: another evalkit process is writing this run ({holder}); wait for it to "
                            "finish, or stop it, then run the same command again") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": datetime.now(timezone.utc).isoformat(),
                  "command": scrub(" ".join(command or sys.argv))}
        with contextlib.suppress(OSError):  # the record only names the holder; the flock is what excludes
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        record = {}
    if not record:
        return "holder unknown"
    return (f"pid {record.get('pid', '?')} on {record.get('host', '?')}, since {record.get('started_at', '?')}: "
            f"{record.get('command', '?')}")
