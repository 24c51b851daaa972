"""A mirror job with a concurrent writer converges, and the copy is byte-for-byte equal."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from ovis.block import CheckedDevice, DelayFilter, FileDevice
from ovis.block._nbd import NbdDevice
from ovis.migrate import MirrorFilter, MirrorJob, MirrorState, start_mirror
from tests.conftest import Served

from .helpers import MiB, memory_with, pattern, sha256_of

SIZE = 16 * MiB


async def _writer(device: CheckedDevice, stop: asyncio.Event, seed: int) -> int:
    """Random small writes (and some zeroes) until told to stop; returns how many."""
    rng = random.Random(seed)
    count = 0
    while not stop.is_set():
        offset = rng.randrange(0, device.size - 70_000)
        if rng.random() < 0.1:
            await device.zero(offset, rng.randrange(1, 70_000))
        else:
            await device.write(offset, pattern(rng.randrange(1, 70_000), count))
        count += 1
        await asyncio.sleep(0.002)
    return count


def test_mirror_to_ovis_serve_with_a_concurrent_writer(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    source_path = tmp_path / "source.img"
    with open(source_path, "wb") as f:  # data, holes, data
        f.truncate(SIZE)
        f.write(pattern(3 * MiB, 1))
        f.seek(10 * MiB)
        f.write(pattern(2 * MiB, 2))
    dest_path = tmp_path / "dest.img"
    dest_path.write_bytes(b"\xee" * SIZE)  # stale garbage the mirror must overwrite
    served = serve(str(dest_path), "--name", "disk", "--port", "0")

    async def main() -> None:
        mirror = MirrorFilter(FileDevice(source_path))
        client_view = CheckedDevice(mirror)
        stop = asyncio.Event()
        writer = asyncio.create_task(_writer(client_view, stop, 1))
        await asyncio.sleep(0.05)
        job = await start_mirror(mirror, served.uri("disk"), max_rate=64 * MiB)
        stats = await asyncio.wait_for(job.wait_ready(), 30)
        assert job.state is MirrorState.READY
        await asyncio.sleep(0.1)  # writes go on, now to both sides
        stop.set()
        writes = await writer
        assert writes > 20
        await client_view.flush()
        dest = await NbdDevice.open(served.uri("disk"))
        try:
            assert await sha256_of(dest) == await sha256_of(mirror)
        finally:
            await dest.aclose()
        assert stats.iterations >= 2 and stats.downtime_ms is not None
        assert stats.copied_bytes >= 5 * MiB
        assert stats.zeroed_bytes > 0, "the holes were zeroed, not copied"
        finished = await job.finish()
        assert finished.state is MirrorState.DONE
        await client_view.write(0, b"after")  # passthrough again
        await client_view.aclose()

    asyncio.run(main())


def test_iteration_cap_ends_a_job_that_cannot_converge_and_loses_no_write() -> None:
    async def main() -> None:
        # Slow writes leave a window between a write starting and landing, in
        # which the job may copy the block: the write must still not be lost.
        memory = await memory_with(SIZE, [(0, pattern(SIZE, 1))])
        source = MirrorFilter(DelayFilter(memory, delay_s=0.001, ops={"write", "zero"}))
        dest = await memory_with(SIZE, [])
        client_view = CheckedDevice(source)
        stop = asyncio.Event()
        writer = asyncio.create_task(_writer(client_view, stop, 2))
        job = MirrorJob(source, dest, dirty_threshold=0, max_iterations=3, max_rate=32 * MiB)
        await job.start()
        stats = await asyncio.wait_for(job.wait_ready(), 30)
        stop.set()
        await writer
        assert stats.iterations == 4, "three passes, then the final one in the pause"
        assert [p.iteration for p in stats.passes] == [1, 2, 3, 4]
        assert all(p.dirty_bytes > 0 for p in stats.passes[1:])
        assert await sha256_of(dest) == await sha256_of(source)
        await job.finish()

    asyncio.run(main())
