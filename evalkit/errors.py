"""One exception hierarchy.

`EvalkitError` means "the user's input or environment is wrong": the CLI catches
it once and prints its message as one line with exit code 2. Anything else is a
bug and may show a traceback.
"""

from __future__ import annotations


class EvalkitError(Exception):
    """The user's input or environment is wrong; the message says what and where."""


class ConfigError(EvalkitError):
    """A rubric, persona, suite or option is malformed or unknown."""


class ModelNotFound(EvalkitError):
    """A model path that does not exist or cannot be read."""


class BackendError(EvalkitError):
    """An endpoint or server that cannot be reached or stopped answering."""


class ServerStartError(BackendError):
    """A managed vLLM server that did not become healthy."""


class RunDirectoryConflict(EvalkitError):
    """An output directory that holds a different run."""


class RunInterrupted(EvalkitError):
    """The run stopped before all work was done; what finished is on disk."""
