"""One exception hierarchy.

`EvalkitError` means "the user's input or environment is wrong, or a model endpoint failed": the CLI
catches it once and prints its message as one line with exit code 2. Anything else is a bug and may
show a traceback. Library code names fields and files, never CLI flags; the CLI maps fields to flags.
"""

from __future__ import annotations


class EvalkitError(Exception):
    """The user's input or environment is wrong; the message says what and where."""


class ConfigError(EvalkitError):
    """A rubric, persona, suite, option or input file is malformed or unknown."""


class ModelNotFound(EvalkitError):
    """A model path that does not exist or cannot be read."""


class RunDirectoryConflict(EvalkitError):
    """An output directory that holds a different run, or something that is not a run."""


class RunLocked(RunDirectoryConflict):
    """Another process is writing the same run directory."""


class RunInterrupted(EvalkitError):
    """The run stopped before all work was done; what finished is on disk."""


class StorageError(EvalkitError):
    """A run file could not be written (disk full, read-only, permissions); what was written before is intact."""


class BackendError(EvalkitError):
    """A model backend failed. `role` (therapist, client, judge) is filled in where the backend is bound to one."""

    role: str | None = None

    def for_role(self, role: str) -> BackendError:
        """The same error, its message prefixed with the role it happened to (once)."""
        if self.role is None:
            self.role = role
            self.args = (f"{role}: {self.args[0] if self.args else type(self).__name__}", *self.args[1:])
        return self


class ServerStartError(BackendError):
    """A managed vLLM server that did not become healthy."""


class BackendUnavailable(BackendError):
    """The backend stopped answering (connection refused, repeated 5xx, timeouts): the run cannot go on."""


class RequestRejected(BackendError):
    """The server refused one request (HTTP 4xx other than context length), or answered without what was asked.

    For the judge this makes one score invalid with the reason; for the therapist or client it ends the run.
    """


class ContextLengthExceeded(RequestRejected):
    """The prompt does not fit the model's context window (an expected end of a long session)."""
