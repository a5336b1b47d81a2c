"""What one request per judge reading saves over the old pair of requests.

vLLM applies the structured-output choice constraint to the logits before computing any logprobs, so a
constrained request cannot say whether the model would rather have answered something else. evalkit used to send,
per reading, that constrained request (exact probabilities over every score) and an unconstrained "mass twin"
(top-20 logprobs: the mass on the score tokens). Because the constrained distribution is exactly the unconstrained
one renormalised over the score tokens, one unconstrained request gives both (judging/choice.py; a constrained
request follows only when a score token is missing from the top list of a reading that needs it). This script
measures, against one server, alternating repetitions, each from an emptied prefix cache:

- one request: evalkit's judge as it reads now (`Judge.ask`, the default minimum mass);
- mass twin: the old way, kept here only (a constrained and an unconstrained request per reading);
- constrained only: one constrained request, no mass (what the old `--no-mass-check` did),

    python benchmarks/judge_mass.py --url http://127.0.0.1:8000 --model tiny [--items 256 --concurrency 16]

and prints items/s for each and the ratio one request / mass twin. Without --url it builds the tiny model and
starts a vLLM CPU server (with VLLM_SERVER_DEV_MODE=1, so the prefix cache can be emptied between repetitions).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evalkit.backends.openai_http import OpenAIBackend, fold_top_logprobs
from evalkit.core.types import ChoiceDistribution
from evalkit.judging import Judge, JudgeSettings

CHOICES = ["0", "1", "2", "3"]
WAYS = ("one request", "mass twin", "constrained only")


def _prompt(i: int) -> list[dict[str, str]]:
    transcript = " ".join(f"Client: I keep going over it at night, turn {t}. Therapist: What do you notice? " for t in range(40))
    return [{"role": "system", "content": "You rate a counselling session. Answer with a single digit."},
            {"role": "user", "content": f"<transcript>{transcript}</transcript>\nItem {i % 25}: rate 0-3."}]


async def twin_reading(backend: OpenAIBackend, messages: list[dict[str, str]], choices: list[str]) -> ChoiceDistribution:
    """The old reading (evalkit before one request per reading): constrained and unconstrained requests at once."""
    body = backend._judge_body(messages)
    constrained = {**body, "structured_outputs": {"choice": choices}}
    exact, free = await asyncio.gather(backend._top_logprobs(constrained), backend._top_logprobs(body))
    return ChoiceDistribution(probs=fold_top_logprobs(exact, choices, constrained=True).probs,
                              mass=fold_top_logprobs(free, choices).mass, constrained=True)


async def _run(backend: OpenAIBackend, items: int, concurrency: int, way: str) -> float:
    judge = Judge(backend, JudgeSettings(), concurrency=concurrency)
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        if way == "one request":
            await judge.ask(_prompt(i), CHOICES)
            return
        async with slots:
            if way == "mass twin":
                await twin_reading(backend, _prompt(i), CHOICES)
            else:
                await backend.choice_distribution(_prompt(i), CHOICES, with_mass=False)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(items)))
    return items / (time.perf_counter() - start)


def _reset_prefix_cache(url: str) -> bool:
    try:
        return httpx.post(f"{url.rstrip('/').removesuffix('/v1')}/reset_prefix_cache", timeout=30).status_code == 200
    except httpx.HTTPError:
        return False


async def main_async(url: str, model: str | None, items: int, concurrency: int, repetitions: int) -> None:
    backend = await OpenAIBackend.connect(url, model)
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    reset = True
    try:
        await _run(backend, 32, concurrency, "mass twin")  # warm-up
        for rep in range(repetitions):
            for way in (WAYS if rep % 2 == 0 else WAYS[::-1]):
                reset = _reset_prefix_cache(url) and reset
                rates[way].append(await _run(backend, items, concurrency, way))
    finally:
        await backend.aclose()
    for way in WAYS:
        print(f"{way + ':':18} {statistics.median(rates[way]):8.1f} items/s  "
              f"(repetitions: {', '.join(f'{r:.1f}' for r in rates[way])})")
    one, twin = statistics.median(rates["one request"]), statistics.median(rates["mass twin"])
    print(f"throughput ratio (one request / mass twin): {one / twin:.3f}; "
          f"(mass twin / constrained only, the old figure: {twin / statistics.median(rates['constrained only']):.3f})")
    print(f"{items} items, concurrency {concurrency}, {repetitions} repetitions, "
          + ("prefix cache emptied before each" if reset else "prefix cache NOT emptied (start the server with VLLM_SERVER_DEV_MODE=1)"))


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

    os.environ["VLLM_SERVER_DEV_MODE"] = "1"
    model = build_tiny_model()
    with tempfile.TemporaryDirectory() as tmp, ManagedVLLMServer(
            str(model), served_name="tiny", log_path=Path(tmp) / "vllm.log", max_model_len=4096,
            extra_args=["--dtype", "float32", "--enforce-eager"]) as server:
        asyncio.run(main_async(server.url, "tiny", args.items, args.concurrency, args.repetitions))


if __name__ == "__main__":
    main()
