"""A write still in flight while the job copies its block is copied again, never lost."""

from __future__ import annotations

import asyncio

from ovis.block import BlockDevice, Filter
from ovis.block._device import Buffer
from ovis.migrate import MirrorFilter, MirrorJob

from .helpers import Counting, MiB, memory_with, pattern

BLOCK = 64 * 1024


class HeldWrites(Filter):
    """Writes reach `next` only once `release` is set."""

    def __init__(self, next: BlockDevice) -> None:
        super().__init__(next)
        self.release = asyncio.Event()

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        await self.release.wait()
        await self.next.write(offset, data, fua=fua)


def test_block_copied_during_a_write_is_copied_again() -> None:
    async def main() -> None:
        memory = await memory_with(MiB, [(0, pattern(MiB, 1))])
        source = HeldWrites(memory)
        mirror = MirrorFilter(source)
        dest = Counting(await memory_with(MiB, []))
        job = MirrorJob(mirror, dest, max_chunk=BLOCK, max_in_flight=1, max_rate=4 * MiB)
        await job.start()
        last = MiB - BLOCK
        write = asyncio.create_task(mirror.write(last, pattern(BLOCK, 2)))
        while not any(offset == last for offset, _ in dest.written):
            await asyncio.sleep(0.005)  # the first pass has copied the old block
        source.release.set()
        await write
        await asyncio.wait_for(job.wait_ready(), 5)
        assert await dest.read(last, BLOCK) == pattern(BLOCK, 2)
        await job.finish()

    asyncio.run(main())


def test_writes_in_flight_when_the_job_starts_are_drained_first() -> None:
    async def main() -> None:
        memory = await memory_with(MiB, [(0, pattern(MiB, 1))])
        source = HeldWrites(memory)
        mirror = MirrorFilter(source)
        write = asyncio.create_task(mirror.write(0, pattern(BLOCK, 2)))  # not tracked yet
        await asyncio.sleep(0.01)
        dest = await memory_with(MiB, [])
        job = MirrorJob(mirror, dest)
        starting = asyncio.create_task(job.start())
        await asyncio.sleep(0.02)
        assert not starting.done(), "start waits for the write in flight"
        source.release.set()
        await write
        await starting
        await asyncio.wait_for(job.wait_ready(), 5)
        assert await dest.read(0, BLOCK) == pattern(BLOCK, 2)
        await job.finish()

    asyncio.run(main())
