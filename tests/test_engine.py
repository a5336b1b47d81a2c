"""run_bounded: a bounded number in flight, pulled lazily from a stream of any length, failures first-class."""

from __future__ import annotations

import asyncio

import pytest

from evalkit.core.concurrency import run_bounded


def test_items_are_pulled_lazily_and_never_more_than_the_bound_in_flight():
    pulled, finished, most_ahead = 0, 0, 0

    def stream():
        nonlocal pulled, most_ahead
        for i in range(1000):
            pulled += 1
            most_ahead = max(most_ahead, pulled - finished)
            yield i

    async def work(item):
        await asyncio.sleep(0.001 * (item % 3))
        return item * 2

    results = {}

    def keep(item, result):
        nonlocal finished
        finished += 1
        results[item] = result

    asyncio.run(run_bounded(stream(), work, concurrency=8, on_result=keep))
    assert results == {i: 2 * i for i in range(1000)}
    assert most_ahead <= 8  # the stream is never read ahead of the workers


def test_the_first_failure_is_raised_as_itself_after_finished_results_are_kept():
    kept = []

    async def work(item):
        if item == 5:
            raise ValueError("boom")
        await asyncio.sleep(0 if item < 5 else 1)
        return item

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(run_bounded(range(20), work, concurrency=4, on_result=lambda i, r: kept.append(r)))
    assert set(kept) >= {0, 1, 2, 3, 4} and not set(kept) & set(range(6, 20))
