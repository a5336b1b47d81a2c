"""Build a tiny random-weight Llama chat model on the spot.

It is what `evalkit demo` and the tests serve with vLLM's CPU build: no hub download
exists here, so the model and its byte-level BPE tokenizer are made locally. Its outputs
are noise; it exercises every mechanism (chat template, sampling, logprobs, structured
outputs) at a size that runs on two CPU cores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from evalkit.core.resources import rubrics_dir, simulators_dir

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BUILD_VERSION = "1"  # bump when the recipe changes, so cached builds are rebuilt


def default_cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "evalkit" / f"tiny-llama-v{BUILD_VERSION}"


def _corpus() -> list[str]:
    """Text to train the tokenizer on: evalkit's own clinical content, so common words are single tokens."""
    lines: list[str] = []
    for directory in (rubrics_dir(), simulators_dir()):
        for path in sorted(directory.rglob("*")):
            if path.is_file() and path.suffix in {".yaml", ".md", ".j2"}:
                lines.extend(path.read_text(encoding="utf-8").splitlines())
    lines.extend(f"{d} {d}{d} score {d}" for d in range(10))
    return lines


def _build_tokenizer(vocab_size: int):
    """The byte-level BPE tokenizer, trained on the spot on `_corpus()`, with the chat template set."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _llama_config(fast, **extra):
    """The tiny Llama's shape: 2 layers, hidden 128, 2 heads of 64 (the CPU attention rejects head_dim 16)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
        **extra,
    )


def _build(out: Path, marker: str, write: Callable[[Path], dict]) -> Path:
    """`write(folder)` fills a fresh folder and returns its recipe; the folder then becomes `out` in one rename, so
    processes building the same cache at once (parallel tests) never read half a model. A finished build is reused."""
    import shutil
    import tempfile

    if (out / marker).exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        (staging / marker).write_text(json.dumps({"recipe": BUILD_VERSION, **write(staging)}))
        try:
            os.rename(staging, out)  # replaces `out` only if it is missing or empty
        except OSError:
            if not (out / marker).exists():  # a folder of the caller's: move the files in, the marker last
                for item in sorted(staging.iterdir(), key=lambda p: p.name == marker):
                    os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def build_tiny_model(out: Path | None = None, *, vocab_size: int = 1024, seed: int = 0) -> Path:
    """Write a tiny Llama (2 layers, hidden 128, head_dim 64) and its tokenizer to `out`; reuse a finished build."""

    def write(folder: Path) -> dict:
        import torch
        from transformers import LlamaForCausalLM

        fast = _build_tokenizer(vocab_size)
        fast.save_pretrained(folder)
        torch.manual_seed(seed)
        LlamaForCausalLM(_llama_config(fast)).to(torch.float32).save_pretrained(folder, safe_serialization=True)
        return {"vocab_size": len(fast), "seed": seed}

    return _build(Path(out) if out else default_cache_dir(), "evalkit-tiny-model.json", write)


REWARD_HEAD_STD = 0.25  # the score head's init; the default 0.02 leaves rewards of different replies ~1e-3 apart


def default_reward_cache_dir() -> Path:
    return default_cache_dir().with_name(f"tiny-llama-reward-v{BUILD_VERSION}")


def build_tiny_reward_model(out: Path | None = None, seed: int = 0, *, vocab_size: int = 1024) -> Path:
    """Write a tiny random `LlamaForSequenceClassification` reward model (one label) to `out`; reuse a finished build.

    The same shape, tokenizer and chat template as `build_tiny_model`, so the chat template renders a conversation
    exactly as for the chat model; `pad_token_id` is set (transformers needs it to find the last token of a padded
    batch). vLLM serves it with `--runner pooling --convert classify` (backends/reward.py)."""

    def write(folder: Path) -> dict:
        import torch
        from transformers import LlamaForSequenceClassification

        fast = _build_tokenizer(vocab_size)
        fast.save_pretrained(folder)
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(_llama_config(fast, num_labels=1)).to(torch.float32)
        with torch.no_grad():
            model.score.weight.normal_(0.0, REWARD_HEAD_STD)
        model.save_pretrained(folder, safe_serialization=True)
        return {"kind": "reward", "vocab_size": len(fast), "seed": seed}

    return _build(Path(out) if out else default_reward_cache_dir(), "evalkit-tiny-reward-model.json", write)


REASONING_TEMPLATE = CHAT_TEMPLATE.replace("<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>\n{% endif %}")


def build_tiny_reasoning_model(out: Path, *, vocab_size: int = 1024, seed: int = 0) -> Path:
    """A tiny "reasoning" chat model: `<think>` and `</think>` are single special tokens and the chat template opens a
    thinking block for every reply (as DeepSeek-R1's does), so vLLM's `deepseek_r1` reasoning parser separates the
    thinking from the reply. Its weights are random: what it thinks is noise, the plumbing is what is tested."""

    def write(folder: Path) -> dict:
        import torch
        from transformers import LlamaForCausalLM

        fast = _build_tokenizer(vocab_size)
        fast.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
        fast.chat_template = REASONING_TEMPLATE
        fast.save_pretrained(folder)
        torch.manual_seed(seed)
        LlamaForCausalLM(_llama_config(fast)).to(torch.float32).save_pretrained(folder, safe_serialization=True)
        return {"kind": "reasoning", "vocab_size": len(fast), "seed": seed}

    return _build(Path(out), "evalkit-tiny-reasoning-model.json", write)
