"""Cancelling a mirror job leaves the source intact and writable, in any state."""

from __future__ import annotations

import asyncio

import pytest

from ovis.block import CheckedDevice, MemoryDevice
from ovis.migrate import MigrationError, MirrorFilter, MirrorJob, MirrorState
from ovis.migrate._mirror_filter import Mode

from .helpers import Counting, MiB, memory_with, pattern, read_all

SIZE = 8 * MiB


def test_cancel_while_copying() -> None:
    async def main() -> None:
        data = bytearray(pattern(SIZE, 1))
        source = Counting(await memory_with(SIZE, [(0, bytes(data))]))
        mirror = MirrorFilter(source)
        view = CheckedDevice(mirror)
        dest = Counting(MemoryDevice(SIZE))
        job = MirrorJob(mirror, dest, max_rate=8 * MiB)  # about a second for the first pass
        await job.start()
        for i in range(20):  # the client keeps writing through the job
            chunk = pattern(10_000, 100 + i)
            await view.write(i * 300_000, chunk)
            data[i * 300_000 : i * 300_000 + 10_000] = chunk
            await asyncio.sleep(0.005)
        waiter = asyncio.create_task(job.wait_ready())
        stats = await job.cancel()
        assert stats.state is MirrorState.CANCELLED
        assert 0 < stats.copied_bytes < SIZE
        with pytest.raises(MigrationError, match="cancelled"):
            await waiter
        assert mirror.mode is Mode.PASSTHROUGH and mirror.dirty is None
        writes_to_dest = len(dest.written)
        chunk = pattern(4096, 7)
        await view.write(0, chunk, fua=True)  # still writable
        data[:4096] = chunk
        assert await read_all(view) == bytes(data), "the source holds exactly the client's data"
        assert source.calls["write"] == 21, "the job never wrote the source"
        await asyncio.sleep(0.05)
        assert len(dest.written) == writes_to_dest, "nothing reaches the destination any more"
        await job.cancel()  # idempotent
        with pytest.raises(MigrationError):
            await job.finish()
        await view.aclose()

    asyncio.run(main())


def test_cancel_when_ready_stops_mirroring_writes() -> None:
    async def main() -> None:
        source = await memory_with(SIZE, [(0, pattern(MiB, 1))])
        mirror = MirrorFilter(source)
        dest = Counting(MemoryDevice(SIZE))
        job = MirrorJob(mirror, dest)
        await job.start()
        await job.wait_ready()
        await mirror.write(0, b"mirrored")
        assert await dest.read(0, 8) == b"mirrored"
        await job.cancel()
        await mirror.write(0, b"localonly")
        assert await dest.read(0, 9) != b"localonly"
        assert await source.read(0, 9) == b"localonly"
        # A new job may start once the old one is gone.
        again = MirrorJob(mirror, dest)
        await again.start()
        await again.wait_ready()
        assert await dest.read(0, 9) == b"localonly"
        await again.cancel()

    asyncio.run(main())


def test_one_job_per_filter() -> None:
    async def main() -> None:
        mirror = MirrorFilter(MemoryDevice(SIZE))
        job = MirrorJob(mirror, MemoryDevice(SIZE), max_rate=MiB)
        await job.start()
        with pytest.raises(MigrationError, match="already"):
            await MirrorJob(mirror, MemoryDevice(SIZE)).start()
        with pytest.raises(ValueError, match="bytes"):
            MirrorJob(mirror, MemoryDevice(SIZE // 2))
        await job.cancel()

    asyncio.run(main())
