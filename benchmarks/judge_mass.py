"""What it costs to know how much probability a constrained judge put on the score tokens.

vLLM applies the structured-output bitmask to the logits before its sampler computes logprobs, so even
`--logprobs-mode raw_logprobs` reports the distribution after the choice constraint: one constrained request
cannot say whether the model would rather have answered something else. evalkit therefore sends, per item,
the constrained request (exact probabilities over every score) and an unconstrained one (top-20 logprobs: the
mass on the score tokens). The second shares the whole prompt with the first, so vLLM's prefix cache serves
it. This script measures both layouts side by side against one server, alternating repetitions:

    python benchmarks/judge_mass.py --url http://127.0.0.1:8000 --model tiny [--items 256 --concurrency 16]

and prints items/s for each and their ratio. Without --url it builds the tiny model and starts a vLLM CPU server.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evalkit.backends.openai_http import OpenAIBackend

CHOICES = ["0", "1", "2", "3"]


def _prompt(i: int) -> list[dict[str, str]]:
    transcript = " ".join(f"Client: I keep going over it at night, turn {t}. Therapist: What do you notice? " for t in range(40))
    return [{"role": "system", "content": "You rate a counselling session. Answer with a single digit."},
            {"role": "user", "content": f"<transcript>{transcript}</transcript>\nItem {i % 25}: rate 0-3."}]


async def _run(backend: OpenAIBackend, items: int, concurrency: int, with_mass: bool) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with slots:
            await backend.choice_distribution(_prompt(i), CHOICES, with_mass=with_mass)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(items)))
    return items / (time.perf_counter() - start)


async def main_async(url: str, model: str | None, items: int, concurrency: int, repetitions: int) -> None:
    backend = await OpenAIBackend.connect(url, model)
    rates: dict[bool, list[float]] = {False: [], True: []}
    try:
        await _run(backend, 32, concurrency, True)  # warm-up
        for _ in range(repetitions):
            for with_mass in (False, True):
                rates[with_mass].append(await _run(backend, items, concurrency, with_mass))
    finally:
        await backend.aclose()
    one, two = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"constrained only:           {one:8.1f} items/s  (repetitions: {', '.join(f'{r:.1f}' for r in rates[False])})")
    print(f"constrained + mass request: {two:8.1f} items/s  (repetitions: {', '.join(f'{r:.1f}' for r in rates[True])})")
    print(f"throughput ratio (with mass / without): {two / one:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--model")
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    if args.url:
        asyncio.run(main_async(args.url, args.model, args.items, args.concurrency, args.repetitions))
        return
    import tempfile

    from evalkit.backends.vllm_server import ManagedVLLMServer
    from evalkit.models.tiny import build_tiny_model

    model = build_tiny_model()
    with tempfile.TemporaryDirectory() as tmp, ManagedVLLMServer(
            str(model), served_name="tiny", log_path=Path(tmp) / "vllm.log", max_model_len=4096,
            extra_args=["--dtype", "float32", "--enforce-eager"]) as server:
        asyncio.run(main_async(server.url, "tiny", args.items, args.concurrency, args.repetitions))


if __name__ == "__main__":
    main()
