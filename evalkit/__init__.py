"""evalkit: clinical-fidelity evaluation of counselling language models.

Personas -> sessions -> transcripts -> judge -> scores -> summary. The CLI is a thin skin
over these functions.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evalkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

from .errors import EvalkitError  # noqa: E402
from .roles import RoleSpec  # noqa: E402
from .rubrics import load_rubric  # noqa: E402
from .runner import RunResult, run, run_async  # noqa: E402
from .suites import available_suites, load_suite  # noqa: E402

__all__ = ["EvalkitError", "RoleSpec", "RunResult", "__version__", "available_suites", "load_rubric", "load_suite", "run", "run_async"]
