"""vLLM in-process (`vllm.LLM.chat`), for single-machine runs where no server is wanted.

Requests are not sent one by one: they queue until every session that is ready has asked, and then
go to the engine as one `LLM.chat` call. Sessions advance together, so turn t of every session in
flight is one batch, the client turns that follow are the next, and the judge's item prompts are
batched the same way. Results are the same records as with a server.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from evalkit.backends.base import BackendInfo, BackendSpec, BuildContext
from evalkit.backends.openai_http import CONTEXT_MARKERS, TOP_LOGPROBS, fold_top_logprobs
from evalkit.core.console import console
from evalkit.core.errors import BackendError, BackendUnavailable, ContextLengthExceeded, RequestRejected
from evalkit.core.types import ChoiceDistribution, Completion, Message, SamplingParams

_SETTLE_ROUNDS = 3  # event-loop rounds with no new request before a batch is sent


@dataclass
class _Request:
    messages: list[Message]
    params: Any  # vllm.SamplingParams
    future: asyncio.Future = field(repr=False)
    queued_at: float = field(default_factory=time.perf_counter)


def engine_kwargs(model: str, vllm_args: list[str], max_model_len: int | None, trust_remote_code: bool) -> dict[str, Any]:
    """`--vllm-args` parsed by vLLM's own argument parser; only what differs from its defaults is passed on."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    try:
        parsed = vars(parser.parse_args(["--model", model, *vllm_args]))
    except SystemExit:
        raise BackendError(f"--vllm-args {' '.join(vllm_args)}: not arguments vLLM's engine accepts") from None
    kwargs = {k: v for k, v in parsed.items() if k != "model" and v != parser.get_default(k)}
    kwargs["logprobs_mode"] = "processed_logprobs"  # the judge reads probabilities after the choice constraint
    kwargs.setdefault("gpu_memory_utilization", 0.3)  # the CPU build's NUMA memory check refuses the default
    if max_model_len:
        kwargs["max_model_len"] = max_model_len
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    return kwargs


class OfflineVLLMBackend:
    def __init__(self, model: str, *, info: BackendInfo, vllm_args: list[str] | None = None,
                 max_model_len: int | None = None, trust_remote_code: bool = False):
        try:
            import vllm
        except ImportError:
            raise BackendError("--backend vllm-offline needs vLLM: install evalkit-clinical[cpu] (CPU) or evalkit-clinical[vllm] (GPU)") from None
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the CPU build's default does not fit a NUMA node
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines would bury the progress display
        self._vllm = vllm
        try:
            self.llm = vllm.LLM(model=model, **engine_kwargs(model, list(vllm_args or []), max_model_len, trust_remote_code))
        except Exception as exc:  # vLLM raises many kinds; none of them is ours to show as a traceback
            raise BackendError(f"vLLM could not load {model} in-process: {str(exc).splitlines()[0][:300]}") from None
        self._defaults = self.llm.get_default_sampling_params()  # the model's generation_config, as a server applies it
        self.info = info.model_copy(update={"server": "vllm", "server_version": vllm.__version__})
        self.batch_sizes: list[int] = []
        self._pending: list[_Request] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalkit-vllm")
        self._worker: asyncio.Task | None = None

    async def chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        sampling = self._defaults.clone()
        sampling.temperature, sampling.top_p, sampling.max_tokens = params.temperature, params.top_p, params.max_tokens
        sampling.ignore_eos = params.ignore_eos
        if params.seed is not None:
            sampling.seed = params.seed
        output, started = await self._submit(messages, sampling)
        out = output.outputs[0]
        return Completion(text=out.text, finish_reason=out.finish_reason, prompt_tokens=len(output.prompt_token_ids or []),
                          completion_tokens=len(out.token_ids), latency_s=time.perf_counter() - started)

    async def choice_distribution(self, messages: list[Message], choices: list[str], *,
                                  with_mass: bool = True) -> ChoiceDistribution:
        """As for a server (backends/openai_http.py): one unconstrained request whose top logprobs, folded onto the
        choices, give the distribution and the mass; `with_mass=False`: the exact distribution, from a request
        restricted to the choices."""
        from vllm.sampling_params import StructuredOutputsParams

        # Neutral sampling, as for a server: the probabilities must be the model's own.
        constrained = not with_mass
        params = self._vllm.SamplingParams(max_tokens=1, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0,
                                           repetition_penalty=1.0, logprobs=TOP_LOGPROBS,
                                           structured_outputs=StructuredOutputsParams(choice=choices) if constrained else None)
        output, _ = await self._submit(messages, params)
        first = (output.outputs[0].logprobs or [{}])[0]
        pairs = [(lp.decoded_token or "", math.exp(lp.logprob)) for lp in first.values()]
        return fold_top_logprobs(pairs, choices, constrained=constrained, asked=TOP_LOGPROBS, exact=True, can_constrain=True)

    async def _submit(self, messages: list[Message], sampling: Any) -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        request = _Request(messages, sampling, loop.create_future())
        self._pending.append(request)
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._batches())
        return await request.future, request.queued_at

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            settled, seen = 0, -1
            while settled < _SETTLE_ROUNDS:  # let every session that is about to ask do so
                settled = settled + 1 if len(self._pending) == seen else 0
                seen = len(self._pending)
                await asyncio.sleep(0)
            batch, self._pending = self._pending, []
            self._wake.clear()
            self.batch_sizes.append(len(batch))
            results = await loop.run_in_executor(self._executor, self._generate, batch)
            for request, result in zip(batch, results, strict=True):
                if request.future.done():
                    continue  # its session was cancelled meanwhile
                if isinstance(result, BaseException):
                    request.future.set_exception(result)
                else:
                    request.future.set_result(result)

    def _generate(self, batch: list[_Request]) -> list[Any]:
        """One engine call for the whole batch; if vLLM rejects it, each request alone finds the one at fault."""
        try:
            return self._chat(batch)
        except ValueError as exc:  # vLLM validates every prompt before it runs any
            if len(batch) > 1:
                return [self._generate([request])[0] for request in batch]
            message = str(exc)
            if any(marker in message.lower() for marker in CONTEXT_MARKERS):
                return [ContextLengthExceeded(message[:300])]
            return [RequestRejected(message[:300])]
        except Exception as exc:  # the engine itself failed: nothing more can be asked of it
            return [BackendUnavailable(f"in-process vLLM failed: {str(exc)[:300] or type(exc).__name__}")] * len(batch)

    def _chat(self, batch: list[_Request]) -> list[Any]:
        return self.llm.chat([r.messages for r in batch], sampling_params=[r.params for r in batch], use_tqdm=False)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        if self.batch_sizes:
            console.print(f"in-process vLLM: {sum(self.batch_sizes)} requests in {len(self.batch_sizes)} batches "
                          f"(largest {max(self.batch_sizes)})")
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=True)
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()


async def build(spec: BackendSpec, context: BuildContext) -> OfflineVLLMBackend:
    assert spec.model is not None
    from evalkit.backends.managed import served_name

    name = served_name(spec.model)
    console.print(f"loading {name} into vLLM in-process", markup=False)
    info = BackendInfo(kind="vllm-offline", model=name, model_path=spec.model, model_hash=spec.model_hash)
    return OfflineVLLMBackend(spec.model, info=info, vllm_args=context.vllm_args, max_model_len=context.max_model_len,
                              trust_remote_code=context.trust_remote_code)
