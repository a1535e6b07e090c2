"""Deadlines: one timer per event loop bounds every store call of an async manager."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from coatcheck._deadline import Deadlines


async def answer(value: int, after: float = 0.0) -> int:
    await asyncio.sleep(after)
    return value


async def test_a_call_in_time_returns_its_value_and_leaves_nothing_behind() -> None:
    deadlines = Deadlines(1.0)
    assert await deadlines.run(answer(7)) == 7
    assert await deadlines.run(answer(8, 0.01)) == 8
    assert deadlines._calls == {}
    assert deadlines._expired == set()


async def test_a_slow_call_raises_timeout_error_at_its_deadline() -> None:
    deadlines = Deadlines(0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await deadlines.run(answer(1, 10))
    took = time.monotonic() - started
    assert 0.19 <= took < 1.5
    assert deadlines._calls == {}
    assert deadlines._expired == set()
    # The task is not left cancelled: it goes on awaiting normally.
    await asyncio.sleep(0.01)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_each_call_has_its_own_deadline_among_many() -> None:
    """Calls started at different times expire at their own deadline; quick ones never do."""
    deadlines = Deadlines(0.3)

    async def one(n: int) -> str:
        await asyncio.sleep(n * 0.02)  # staggered starts
        started = time.monotonic()
        try:
            await deadlines.run(answer(n, 10 if n % 2 else 0.01))
        except TimeoutError:
            return f"timeout after {time.monotonic() - started:.2f}"
        return "ok"

    results = await asyncio.gather(*(one(n) for n in range(20)))
    for n, result in enumerate(results):
        if n % 2:
            assert result.startswith("timeout"), (n, result)
            took = float(result.split()[-1])
            assert 0.29 <= took < 1.5, (n, result)
        else:
            assert result == "ok", (n, result)
    assert deadlines._calls == {}


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = Deadlines(5.0)
    task = asyncio.create_task(deadlines.run(answer(1, 10)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines._calls == {}


async def test_a_call_that_raises_passes_its_error_through() -> None:
    deadlines = Deadlines(5.0)

    async def broken() -> int:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await deadlines.run(broken())
    assert deadlines._calls == {}


async def test_a_call_inside_a_call_is_bounded_too() -> None:
    deadlines = Deadlines(0.2)

    async def outer() -> int:
        return await deadlines.run(answer(1, 10))

    with pytest.raises(TimeoutError):
        await deadlines.run(outer())


def test_another_event_loop_is_bounded_while_the_first_one_lives() -> None:
    """A manager shared by two loops (two threads): the second falls back to asyncio.timeout;
    once the first loop is closed, the next loop is served by the shared timer."""
    deadlines = Deadlines(0.2)
    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(deadlines.run(answer(1))) == 1
        outcome: list[str] = []

        def other_thread() -> None:
            async def go() -> None:
                try:
                    await deadlines.run(answer(2, 10))
                except TimeoutError:
                    outcome.append("timeout")

            asyncio.run(go())

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(5)
        assert outcome == ["timeout"]
        assert deadlines._loop is first
    finally:
        first.close()

    async def after() -> None:
        with pytest.raises(TimeoutError):
            await deadlines.run(answer(3, 10))
        assert deadlines._loop is asyncio.get_running_loop()

    asyncio.run(after())
