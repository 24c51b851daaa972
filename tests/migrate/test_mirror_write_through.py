"""Once ready, every write reaches both sides, in the same order where writes overlap."""

from __future__ import annotations

import asyncio
import random

from ovis.block import BlockDevice, CheckedDevice, ErrorFilter, Filter, MemoryDevice
from ovis.block._device import Buffer
from ovis.migrate import MirrorFilter, MirrorJob, MirrorState

from .helpers import MiB, memory_with, pattern, sha256_of

SIZE = 4 * MiB


class Jitter(Filter):
    """Writes take a random time, so concurrent writes may finish in any order."""

    def __init__(self, next: BlockDevice, seed: int) -> None:
        super().__init__(next)
        self._random = random.Random(seed)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        await asyncio.sleep(self._random.random() * 0.005)
        await self.next.write(offset, data, fua=fua)


def test_overlapping_writes_apply_in_one_order_on_both_sides() -> None:
    async def main() -> None:
        source = Jitter(await memory_with(SIZE, [(0, pattern(SIZE, 1))]), seed=1)
        dest = Jitter(MemoryDevice(SIZE), seed=2)
        mirror = MirrorFilter(source)
        view = CheckedDevice(mirror)
        job = MirrorJob(mirror, dest)
        await job.start()
        await job.wait_ready()
        rng = random.Random(3)
        writes = []
        for i in range(200):  # many writes to a few hot spots, all at once
            offset = rng.choice([0, 4096, 65536 - 2000, MiB]) + rng.randrange(0, 3000)
            writes.append(view.write(offset, pattern(rng.randrange(1, 9000), i)))
        writes.append(view.trim(MiB, 128 * 1024))
        writes.append(view.zero(0, 3000))
        await asyncio.gather(*writes)
        await view.flush()
        assert job.state is MirrorState.READY
        assert await sha256_of(dest) == await sha256_of(source)
        await job.finish()

    asyncio.run(main())


def test_a_destination_failure_fails_the_job_but_not_the_client() -> None:
    async def main() -> None:
        source = await memory_with(SIZE, [(0, pattern(SIZE, 1))])
        broken = ErrorFilter(MemoryDevice(SIZE), ops={"write"}, rate=0.0)
        mirror = MirrorFilter(source)
        job = MirrorJob(mirror, broken)
        await job.start()
        await job.wait_ready()
        broken.rate = 1.0  # the destination fails from now on
        await mirror.write(0, b"still fine", fua=True)
        assert await source.read(0, 10) == b"still fine"
        assert job.state is MirrorState.FAILED and job.error is not None
        await mirror.write(0, b"passthrough")  # detached: nothing tries the destination
        assert (await job.cancel()).state is MirrorState.FAILED

    asyncio.run(main())
