"""Where the source reports holes, the destination gets zero requests, not zeros as data."""

from __future__ import annotations

import asyncio

from ovis.migrate import MirrorFilter, MirrorJob

from .helpers import Counting, MiB, memory_with, pattern, sha256_of

SIZE = 64 * MiB


def test_holes_are_zeroed_not_copied() -> None:
    async def main() -> None:
        source = await memory_with(
            SIZE, [(0, pattern(MiB, 1)), (40 * MiB + 4096, pattern(5000, 2))]
        )
        dest = Counting(await memory_with(SIZE, [(20 * MiB, pattern(MiB, 3))]))  # stale data
        mirror = MirrorFilter(source)
        job = MirrorJob(mirror, dest)
        await job.start()
        stats = await job.wait_ready()
        written = dest.data_written
        assert written <= MiB + 64 * 1024, "only the data blocks travel as data"
        assert stats.zeroed_bytes >= SIZE - MiB - 64 * 1024
        assert stats.copied_bytes == written
        assert await sha256_of(dest) == await sha256_of(source)
        await job.finish()

    asyncio.run(main())
