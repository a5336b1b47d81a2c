"""Files evalkit writes and reads, so that a failure never leaves half a file or a traceback.

- `write_atomic`: a temporary file beside the target, fsync'd, then renamed over it; on any failure the
  temporary file is removed and the target is untouched.
- `append_lines`: one write per call, fsync'd; a crash leaves whole lines plus at most one torn tail line,
  which `repair_tail` cuts off on the next open.
- every OSError becomes a one-line `StorageError` naming the file; every text read is UTF-8 or a one-line
  `ConfigError`. Everything written passes through `secrets.scrub`, so no API key reaches disk.
- a path that is not UTF-8 is refused before anything is written (`check_utf8_path`); an output file replaces an
  older file, never a folder, FIFO or device (`refuse_non_file`); run files are not written into a run directory
  that has been removed (`make_parents=False`), so no lone file is left where the run was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from pydantic import BaseModel, ValidationError

from evalkit.core.errors import ConfigError, StorageError
from evalkit.core.secrets import scrub
from evalkit.core.yamlio import describe_validation_error, read_text

R = TypeVar("R", bound=BaseModel)
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK  # what open() would give; mkstemp's private 0600 would surprise users sharing results


def _storage_error(path: Path, exc: OSError) -> StorageError:
    reason = exc.strerror or str(exc)
    return StorageError(f"{path}: cannot write ({reason})")


def write_atomic(path: Path, text: str, *, make_parents: bool = True) -> None:
    """`make_parents=False`: the folder must still exist (a run directory removed while the run writes is not made
    again around a lone file)."""
    data = scrub(text).encode("utf-8", "backslashreplace")
    _replace_atomically(Path(path), lambda handle: handle.write(data), make_parents=make_parents)


def write_lines_atomic(path: Path, lines: Iterable[str], *, make_parents: bool = True) -> None:
    """Lines streamed into a new file that appears whole or not at all (never a half-copied file)."""
    _replace_atomically(Path(path), lambda handle: handle.writelines(scrub(line).encode("utf-8", "backslashreplace") + b"\n"
                                                                    for line in lines), make_parents=make_parents)


def write_table(path: Path, frame) -> None:
    """A pandas DataFrame as .parquet or .csv (by the suffix), atomically like `write_atomic`."""
    path = Path(path)
    if path.suffix == ".parquet":
        _replace_atomically(path, lambda handle: frame.to_parquet(handle, index=False))
    else:
        _replace_atomically(path, lambda handle: handle.write(scrub(frame.to_csv(index=False)).encode("utf-8")))


def _replace_atomically(path: Path, fill: Callable[[BinaryIO], object], *, make_parents: bool = True) -> None:
    tmp_name = None
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise _storage_error(path, exc) from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def overwrite_in_place(path: Path, text: str) -> None:
    """Rewrite an existing file through its own blocks: the last resort when a full disk leaves no room for
    `write_atomic`'s temporary file. Not atomic, so only for small files whose loss is worse than the risk."""
    data = scrub(text).encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        raise _storage_error(path, exc) from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    except OSError as exc:
        raise _storage_error(path, exc) from None
    finally:
        os.close(fd)


def append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines with one write; on failure, cut whatever part of them reached the file."""
    if not lines:
        return
    payload = scrub("".join(line + "\n" for line in lines)).encode("utf-8", "backslashreplace")
    path = Path(path)
    try:
        # A raw descriptor: a buffered file would try to flush the failed bytes again when truncated.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE)
    except OSError as exc:
        raise _storage_error(path, exc) from None
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            try:  # leave the file as it was before this call, so no partial record survives
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise _storage_error(path, exc) from None
    finally:
        os.close(fd)


def repair_tail(path: Path) -> None:
    """Drop a last line that was being written when the process died."""
    path = Path(path)
    try:
        if not path.exists() or path.stat().st_size == 0:
            return
        with path.open("rb+") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 1))
            if handle.read(1) == b"\n":
                return
            handle.seek(0)
            data = handle.read()
            handle.truncate(data.rfind(b"\n") + 1)
    except OSError as exc:
        raise _storage_error(path, exc) from None


def iter_jsonl(path: Path, model: type[R]) -> Iterator[R]:
    """Records one at a time (constant memory). Lines split on "\\n" only: model output may hold U+2028."""
    path = Path(path)
    if not path.exists():
        return
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                return  # torn tail of an interrupted write: not a record
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{path}:{number}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                yield model.model_validate_json(line)
            except ValidationError as exc:
                raise ConfigError(describe_validation_error(f"{path}:{number}", exc)) from None


def read_model(path: Path, model: type[R], *, what: str) -> R:
    text = read_text(path, what=what)
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise ConfigError(f"not an evalkit {what}: {describe_validation_error(str(path), exc)}") from None


def shown(path: str | Path) -> str:
    """A path as text that can be printed and stored as JSON: bytes that are not UTF-8 shown as \\xNN."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_utf8_path(path: Path, field: str) -> None:
    """Refuse, before anything is written, a path that is not UTF-8 text: run files record paths as JSON."""
    try:
        str(Path(path).absolute()).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{field} {shown(Path(path).absolute())}: the path is not UTF-8 text (evalkit records paths "
                          "in JSON); choose a path without those bytes") from None


def refuse_non_file(path: Path, field: str) -> None:
    """An output file may replace an earlier file of the same name, never a folder, a FIFO, a device or a socket."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not path.is_file():
        kind = "a folder" if path.is_dir() else "a named pipe (FIFO)" if path.is_fifo() else \
            "a device" if path.is_block_device() or path.is_char_device() else "a socket" if path.is_socket() else "not a regular file"
        raise ConfigError(f"{field} {shown(path)}: is {kind}, not a file; nothing was written (choose another path)")


def ensure_directory(path: Path, field: str = "output directory") -> Path:
    """Create a directory (and parents), or say in one line why it cannot be one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{field} {path}: is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{field} {path}: cannot create ({exc.strerror or exc})") from None
    return path


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    try:
        stat = path.stat() if path is not None else None
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size) if stat else None


@contextlib.contextmanager
def report_follows(report: Path | None, marker: Path | None) -> Iterator[None]:
    """Around a command that rewrites data (`marker`, e.g. comparison.json or gate.json, written last) and then the
    HTML report of it: the older report is moved aside meanwhile, so a reader never finds a report beside data that is
    not its own, even when the command is killed between the two. If the command stops before it wrote new data (bad
    input, Ctrl-C during the analysis), the older report is put back; once new data exists, the older one is dropped.

        with report_follows(out / "report.html", out / "comparison.json"):
            ...write the tables, then comparison.json, then report.html...
    """
    if report is None:
        yield
        return
    aside = report.with_name(f".{report.name}.old")
    with contextlib.suppress(OSError):
        aside.unlink(missing_ok=True)  # left by a command killed while it held the report aside
    if not report.is_file() or report.is_symlink():
        yield
        return
    before = _stamp(marker)
    try:
        os.replace(report, aside)
    except OSError:  # cannot move it (read-only folder): the command will fail to write there anyway
        yield
        return
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            if _stamp(marker) == before and not report.exists():
                os.replace(aside, report)
        raise
    finally:
        with contextlib.suppress(OSError):
            aside.unlink(missing_ok=True)
