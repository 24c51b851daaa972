"""start_eagerly: synchronous coroutines need no Task; suspending ones carry on in one."""

from __future__ import annotations

import asyncio

import pytest

from ovis.nbd._eager import start_eagerly


def test_coroutine_that_never_waits_runs_to_completion_without_a_task() -> None:
    async def main() -> None:
        seen: list[int] = []

        async def work() -> None:
            seen.append(1)

        assert start_eagerly(work()) is None
        assert seen == [1]

    asyncio.run(main())


def test_coroutine_that_waits_continues_in_a_task_with_results_and_errors() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        seen: list[object] = []

        async def work() -> None:
            seen.append("started")
            seen.append(await fut)
            await asyncio.sleep(0)
            try:
                await loop.run_in_executor(None, int, "x")
            except ValueError as exc:
                seen.append(type(exc).__name__)

        task = start_eagerly(work())
        assert task is not None and seen == ["started"]
        fut.set_result(42)
        await task
        assert seen == ["started", 42, "ValueError"]

    asyncio.run(main())


def test_cancelling_the_task_reaches_the_coroutine() -> None:
    async def main() -> None:
        cleaned = asyncio.Event()

        async def work() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                cleaned.set()

        task = start_eagerly(work())
        assert task is not None
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned.is_set()

    asyncio.run(main())
