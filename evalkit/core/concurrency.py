"""Bounded concurrency over a lazy stream: the one way evalkit keeps N requests or sessions in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable


async def run_bounded(items: Iterable, work: Callable[[object], Awaitable[object]], *, concurrency: int,
                      on_result: Callable[[object, object], None]) -> None:
    """Run `work` on every item with at most `concurrency` in flight; `on_result` sees each as it finishes.

    `concurrency` workers pull from one iterator, so `items` may be a lazy stream of any length: memory
    holds the items in flight, not the whole list. The first failure cancels the rest and is raised as
    itself (not as an exception group), after every result that finished before it was handed to `on_result`.
    """
    stream = iter(items)

    async def worker() -> None:
        for item in stream:  # next() never awaits, so workers cannot interleave inside it
            result = await work(item)
            on_result(item, result)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    except BaseExceptionGroup as group_error:
        first = group_error.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
