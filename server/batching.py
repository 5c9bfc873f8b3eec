"""Concurrent queries answered together.

Most of a lone text query's time is the fixed cost of each step: counting its words, one
pass through each model, one index search. A batch pays those once. The server answers
on one event loop, so queries that arrive while a batch is being answered wait here and
are answered together. There is no timer: the batch is answered at the first turn of the
loop in which no query joined it (at most ``max_turns`` turns), so a query that arrives
alone is answered at once, and the batch grows with the load (up to ``max_batch``).
Waiting for a quiet turn matters: requests read from the network in one turn reach their
handler in the next, so answering in the first turn would split what arrived together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable


class QueryBatcher:
    """``await batcher(key, item)``: the answer to ``item``, computed by ``answer(key, items)``
    together with the other items of the same ``key`` that are waiting. ``answer`` returns
    one result per item, in order; a result that is an exception is raised to that item's
    caller alone, and an exception raised by ``answer`` goes to every caller of the batch."""

    def __init__(self, answer: Callable[[Hashable, list], list], max_batch: int = 64, max_turns: int = 8) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.answer, self.max_batch, self.max_turns = answer, max_batch, max_turns
        self._waiting: dict[Hashable, list[tuple[object, asyncio.Future]]] = {}
        self._scheduled = False
        self._count = 0  # items waiting
        self.batches = self.items = 0  # answered so far: the mean batch size shows the load

    async def __call__(self, key: Hashable, item):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.setdefault(key, []).append((item, future))
        self._count += 1
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._when_quiet, loop, self._count, 1)
        return await future

    def _when_quiet(self, loop, seen: int, turns: int) -> None:
        if self._count > seen and self._count < self.max_batch and turns < self.max_turns:
            loop.call_soon(self._when_quiet, loop, self._count, turns + 1)  # still growing: one more turn
            return
        self._scheduled = False
        waiting, self._waiting, self._count = self._waiting, {}, 0
        for key, entries in waiting.items():
            entries = [(item, future) for item, future in entries if not future.cancelled()]
            for start in range(0, len(entries), self.max_batch):
                self._answer_batch(key, entries[start : start + self.max_batch])

    def _answer_batch(self, key: Hashable, entries: list) -> None:
        self.batches, self.items = self.batches + 1, self.items + len(entries)
        try:
            results = self.answer(key, [item for item, _ in entries])
        except Exception as error:  # noqa: BLE001 (the callers' error handlers say what it was)
            results = [error] * len(entries)
        for (_, future), result in zip(entries, results, strict=True):
            if future.cancelled():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
