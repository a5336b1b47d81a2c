"""In-process transformers: for checkpoints vLLM cannot load (custom architectures with
trust_remote_code) and for small CPU work. One request at a time, in a worker thread."""

from __future__ import annotations

import asyncio
import threading
import time

from evalkit.backends.base import BackendInfo, BackendSpec, BuildContext
from evalkit.core.errors import BackendError, ContextLengthExceeded
from evalkit.core.types import ChoiceDistribution, Completion, Message, SamplingParams


class TransformersBackend:
    def __init__(self, model_path: str, *, served_name: str, trust_remote_code: bool = False, info: BackendInfo):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise BackendError("the transformers backend needs evalkit-clinical[transformers] (transformers and torch)") from None
        self._torch = torch
        self.info = info
        self.served_name = served_name
        device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=trust_remote_code).to(device)
        except Exception as exc:  # transformers raises many kinds for a checkpoint it cannot load; none is a bug of ours
            if "trust_remote_code" in str(exc) and not trust_remote_code:
                raise BackendError(f"{model_path} ships its own modelling code, which runs only when allowed: "
                                   "trust_remote_code (--trust-remote-code), if you trust its source") from None
            raise BackendError(f"transformers could not load {model_path}: {(str(exc).splitlines() or [type(exc).__name__])[0][:300]}") from None
        self.model.eval()
        self.device = device
        self.max_len = getattr(self.model.config, "max_position_embeddings", None)
        self._lock = threading.Lock()
        info.server, info.server_version = "transformers", __import__("transformers").__version__

    def _encode(self, messages: list[Message]):
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        input_ids = ids["input_ids"].to(self.device)
        if self.max_len and input_ids.shape[1] >= self.max_len:
            raise ContextLengthExceeded(f"prompt of {input_ids.shape[1]} tokens exceeds the model's {self.max_len}")
        return input_ids

    def _generate(self, messages: list[Message], params: SamplingParams) -> Completion:
        start = time.perf_counter()
        with self._lock, self._torch.inference_mode():
            input_ids = self._encode(messages)
            sample = params.temperature > 0
            output = self.model.generate(
                input_ids,
                attention_mask=self._torch.ones_like(input_ids),
                max_new_tokens=params.max_tokens,
                do_sample=sample,
                temperature=params.temperature if sample else None,
                top_p=params.top_p if sample else None,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        new = output[0, input_ids.shape[1]:]
        eos = self.tokenizer.eos_token_id
        finished = eos is not None and eos in new.tolist()
        return Completion(
            text=self.tokenizer.decode(new, skip_special_tokens=True),
            finish_reason="stop" if finished else "length",
            prompt_tokens=int(input_ids.shape[1]),
            completion_tokens=int(new.shape[0]),
            latency_s=time.perf_counter() - start,
        )

    def _distribution(self, messages: list[Message], choices: list[str]) -> ChoiceDistribution:
        token_ids = []
        for choice in choices:
            ids = self.tokenizer.encode(choice, add_special_tokens=False)
            if len(ids) != 1:
                raise BackendError(f"score '{choice}' is not a single token for {self.served_name}'s tokenizer")
            token_ids.append(ids[0])
        with self._lock, self._torch.inference_mode():
            logits = self.model(self._encode(messages)).logits[0, -1].float()
        full = self._torch.softmax(logits, dim=-1)
        allowed = full[token_ids]
        mass = float(allowed.sum())
        # Restricting decoding to the choices and renormalising is what vLLM's structured outputs do.
        probs = {c: float(p) for c, p in zip(choices, self._torch.softmax(logits[token_ids], dim=-1), strict=True)}
        return ChoiceDistribution(probs=probs, mass=mass, constrained=True)

    async def chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        return await asyncio.to_thread(self._generate, messages, params)

    async def choice_distribution(self, messages: list[Message], choices: list[str], *,
                                  with_mass: bool = True) -> ChoiceDistribution:
        return await asyncio.to_thread(self._distribution, messages, choices)

    async def aclose(self) -> None:
        return None


async def build(spec: BackendSpec, context: BuildContext) -> TransformersBackend:
    assert spec.model is not None
    from evalkit.backends.managed import served_name

    name = served_name(spec.model)
    info = BackendInfo(kind="transformers", model=name, model_path=spec.model, model_hash=spec.model_hash)
    return TransformersBackend(spec.model, served_name=name, trust_remote_code=context.trust_remote_code, info=info)
