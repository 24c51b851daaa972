"""KeyedLock serialises per key and forgets keys nobody holds."""

from __future__ import annotations

import asyncio

from ovis.store import KeyedLock


def test_same_key_is_serialised_other_keys_are_not() -> None:
    async def main() -> None:
        locks = KeyedLock()
        order: list[str] = []

        async def worker(key: int, name: str) -> None:
            async with locks.hold(key):
                order.append(f"{name}+")
                await asyncio.sleep(0.01)
                order.append(f"{name}-")

        await asyncio.gather(worker(1, "a"), worker(1, "b"), worker(2, "c"))
        assert order.index("a-") < order.index("b+")
        assert order.index("c+") < order.index("a-")
        assert len(locks) == 0

    asyncio.run(main())


def test_a_cancelled_waiter_does_not_leak_its_key() -> None:
    async def main() -> None:
        locks = KeyedLock()
        async with locks.hold("k"):
            waiter = asyncio.create_task(locks.hold("k").__aenter__())
            await asyncio.sleep(0)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        assert len(locks) == 0

    asyncio.run(main())
