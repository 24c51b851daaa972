"""During the final pause writes wait at the gate; the pause is measured as downtime."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ovis.block import DelayFilter, MemoryDevice
from ovis.migrate import MirrorFilter, MirrorJob, MirrorState

from .helpers import MiB, memory_with, pattern

BLOCK = 64 * 1024


def test_writes_wait_during_the_pause_and_then_reach_both_sides() -> None:
    async def main() -> None:
        source = await memory_with(4 * MiB, [(0, pattern(4 * MiB, 1))])
        mirror = MirrorFilter(source)
        dest = DelayFilter(MemoryDevice(4 * MiB), delay_s=0.03, ops={"write", "flush"})
        job = MirrorJob(mirror, dest, dirty_threshold=MiB)
        await job.start()
        await asyncio.wait_for(_until(lambda: len(job.stats.passes) == 1), 5)
        await mirror.write(0, pattern(100, 2))  # dirty, during the flush after pass 1
        await asyncio.wait_for(_until(lambda: job.state is MirrorState.PAUSED), 5)
        reads_go_on = await mirror.read(0, 100)  # reads never wait
        assert reads_go_on == pattern(100, 2)
        started = time.monotonic()
        await mirror.write(BLOCK, pattern(100, 3))
        waited_ms = (time.monotonic() - started) * 1000
        assert job.state is MirrorState.READY, "the write went through only after the pause"
        stats = job.stats
        assert stats.downtime_ms is not None and stats.downtime_ms >= 50  # a write, a flush
        assert stats.passes[-1].dirty_bytes == BLOCK
        # It waited for the pause, then for its own write to both sides (30 ms here).
        assert waited_ms <= stats.downtime_ms + 30 + 15
        assert await dest.read(BLOCK, 100) == pattern(100, 3), "mirrored by write-through"
        assert await dest.read(0, 100) == pattern(100, 2), "copied in the pause"
        await job.finish()

    asyncio.run(main())


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)
