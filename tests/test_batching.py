"""The server's batching of concurrent queries (server/batching.py), without a server."""

from __future__ import annotations

import asyncio

import pytest

from semhash.server.batching import QueryBatcher


def run_together(batcher: QueryBatcher, calls: list[tuple]) -> list:
    async def main():
        return await asyncio.gather(*(batcher(key, item) for key, item in calls), return_exceptions=True)

    return asyncio.run(main())


def test_waiting_items_of_one_key_are_answered_in_one_call_in_order():
    seen = []

    def answer(key, items):
        seen.append((key, list(items)))
        return [f"{key}:{item}" for item in items]

    batcher = QueryBatcher(answer)
    results = run_together(batcher, [("a", 1), ("b", 2), ("a", 3), ("a", 4)])
    assert results == ["a:1", "b:2", "a:3", "a:4"]
    assert sorted(seen) == [("a", [1, 3, 4]), ("b", [2])]
    assert (batcher.batches, batcher.items) == (2, 4)


def test_an_error_result_goes_to_its_caller_alone_and_a_raised_one_to_the_batch():
    def answer(key, items):
        if key == "broken":
            raise RuntimeError("the whole batch failed")
        return [ValueError(f"bad {item}") if item < 0 else item * 10 for item in items]

    results = run_together(QueryBatcher(answer), [("ok", 1), ("ok", -2), ("ok", 3), ("broken", 4), ("broken", 5)])
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -2"
    assert all(isinstance(r, RuntimeError) for r in results[3:])


def test_batches_are_bounded_and_an_item_alone_is_answered_at_once():
    sizes = []

    def answer(key, items):
        sizes.append(len(items))
        return items

    batcher = QueryBatcher(answer, max_batch=3)
    assert run_together(batcher, [("k", i) for i in range(7)]) == list(range(7))
    assert sizes == [3, 3, 1]
    assert asyncio.run(asyncio.wait_for(batcher("k", "alone"), timeout=1)) == "alone"


def test_a_cancelled_caller_is_skipped():
    answered = []

    def answer(key, items):
        answered.extend(items)
        return items

    async def main():
        batcher = QueryBatcher(answer)
        gone = asyncio.ensure_future(batcher("k", "gone"))
        kept = asyncio.ensure_future(batcher("k", "kept"))
        await asyncio.sleep(0)  # both are waiting; the batch is due in the next turn
        gone.cancel()
        return await kept

    assert asyncio.run(main()) == "kept"
    assert answered == ["kept"]


@pytest.mark.parametrize("size", [0, -1])
def test_max_batch_must_be_positive(size):
    with pytest.raises(ValueError, match="max_batch"):
        QueryBatcher(lambda key, items: items, max_batch=size)
