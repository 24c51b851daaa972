"""MirrorJob: pre-copy storage migration, qemu's blockdev-mirror.

Lifecycle (research/migration.md §3):

    COPYING --passes converge--> PAUSED --last blocks copied--> READY
       |                                                          |
       +--- cancel() --> CANCELLED     finish() --> DONE <--------+
       +--- error -----> FAILED  (from any running state)

- COPYING: pass 1 copies every block (the filter starts with all bits
  dirty); later passes copy the blocks written since.  Each pass scans the
  dirty bitmap once, taking runs of up to `max_chunk` bytes, clearing their
  bits and copying them with at most `max_in_flight` copies in flight and at
  most `max_rate` bytes/s read as data.  Ranges the source reports as zero
  are zeroed on the destination, not copied.  Passes repeat until the
  dirty set after a pass is at most `dirty_threshold` bytes, or
  `max_iterations` passes have run (then the pause copies whatever is left:
  a write-heavy client gets a longer pause, not an endless job).
- PAUSED: the filter's write gate closes, writes in flight drain, the last
  dirty blocks are copied and the destination is flushed; then the filter
  switches to write-through and the gate opens.  The time from closing to
  opening is `downtime_ms`: the longest any write waited.
- READY: the destination equals the source and every write is applied to
  both, until `finish()` (the client has pivoted to the destination) or
  `cancel()`.  Both detach the filter and leave the source as it was.

Failure: a copy error fails the job (state FAILED, `error` set) and detaches
the filter; the source is never written by the job, so it stays intact and
writable whatever happens.  The destination's contents are then undefined.
The job does not close `destination` unless `close_destination` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time

from ovis.block._device import BlockDevice, MiB

from ._copy import Copied, Labelled, copy_range
from ._errors import MigrationError, first_cause
from ._mirror_filter import MirrorFilter
from ._rate import RateLimiter

log = logging.getLogger("ovis.migrate.mirror")


class MirrorState(enum.Enum):
    """Where a job is in its lifecycle (see the module docstring)."""

    COPYING = "copying"
    PAUSED = "paused"
    READY = "ready"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True, slots=True)
class PassStats:
    """One pass over the dirty bitmap; the last one ran inside the final pause."""

    iteration: int
    dirty_bytes: int  # dirty when the pass started
    copied_bytes: int  # read and written as data
    zeroed_bytes: int  # zeroed on the destination instead
    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class MirrorStats:
    """A snapshot of a job, for status output and metrics."""

    state: MirrorState
    size: int
    iterations: int
    passes: tuple[PassStats, ...]
    copied_bytes: int
    zeroed_bytes: int
    dirty_bytes: int
    downtime_ms: float | None  # the final pause, once it has happened
    error: str | None


class MirrorJob:
    """Copies `filter`'s source to `destination` and keeps them equal until finished."""

    def __init__(
        self,
        filter: MirrorFilter,
        destination: BlockDevice,
        *,
        granularity: int = 64 * 1024,
        max_chunk: int = 1 * MiB,
        max_in_flight: int = 16,
        max_rate: float | None = None,
        dirty_threshold: int = 1 * MiB,
        max_iterations: int = 10,
        close_destination: bool = False,
    ) -> None:
        if destination.size != filter.size:
            raise ValueError(f"destination is {destination.size} bytes, source {filter.size}")
        if not destination.capabilities.can_write:
            raise ValueError("the destination is read-only")
        align = max(filter.capabilities.min_block, destination.capabilities.min_block)
        if granularity & (granularity - 1) or granularity < align:
            raise ValueError(f"granularity {granularity} is not a power of two >= {align}")
        if max_chunk < granularity or max_in_flight < 1 or max_iterations < 1:
            raise ValueError("need max_chunk >= granularity, max_in_flight and max_iterations >= 1")
        self.filter = filter
        self.destination: BlockDevice = Labelled(destination, "destination")
        self.granularity = granularity
        self.limiter = RateLimiter(max_rate)
        self._chunk_blocks = max_chunk // granularity
        self._max_in_flight = max_in_flight
        self.dirty_threshold = dirty_threshold
        self.max_iterations = max_iterations
        self._close_destination = close_destination
        self.state = MirrorState.COPYING
        self.error: BaseException | None = None
        self.ready = asyncio.Event()
        self._passes: list[PassStats] = []
        self._copied = Copied()
        self._downtime: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._ended = asyncio.Event()

    @property
    def stats(self) -> MirrorStats:
        dirty = self.filter.dirty
        return MirrorStats(
            self.state,
            self.filter.size,
            len(self._passes),
            tuple(self._passes),
            self._copied.data_bytes,
            self._copied.zero_bytes,
            0 if dirty is None else dirty.count * self.granularity,
            None if self._downtime is None else self._downtime * 1000,
            None if self.error is None else str(self.error),
        )

    async def start(self) -> None:
        """Attach the filter and start copying in the background.

        Attaching holds writes while those in flight drain (see
        MirrorFilter.attach).  Raises MigrationError if this job was started
        before or another job is attached to the filter.
        """
        if self._started:
            raise MigrationError("the job has already been started")
        self._started = True
        try:
            await self.filter.attach(self.granularity)
        except BaseException:
            self._started = False
            raise
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def wait_ready(self) -> MirrorStats:
        """Wait for READY; raises MigrationError if the job fails or is cancelled first."""
        ready = asyncio.ensure_future(self.ready.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait([ready, ended], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            ended.cancel()
        if self.state is not MirrorState.READY:
            raise MigrationError(f"mirror job {self.state.value}: {self.error}") from self.error
        return self.stats

    async def finish(self) -> MirrorStats:
        """End a READY job once the client has pivoted: stop mirroring writes."""
        if self.state is not MirrorState.READY:
            raise MigrationError(f"cannot finish a job that is {self.state.value}")
        await self._end(MirrorState.DONE)
        return self.stats

    async def cancel(self) -> MirrorStats:
        """Stop the job in any state; the source is left untouched and writable.

        Idempotent; on a job that already ended it only closes an owned
        destination (a job that failed in write-through leaves it open).
        """
        if self.state in (MirrorState.DONE, MirrorState.CANCELLED, MirrorState.FAILED):
            await self._close_owned_destination()
            return self.stats
        await self._end(MirrorState.CANCELLED)
        return self.stats

    async def aclose(self) -> None:
        """`cancel()` under the name resources close by."""
        await self.cancel()

    async def _end(self, state: MirrorState, error: BaseException | None = None) -> None:
        self.state = state
        self.error = error
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.filter.detach()
        self._ended.set()
        await self._close_owned_destination()
        log.info("mirror job %s: %s", state.value, self.stats)

    async def _close_owned_destination(self) -> None:
        if self._close_destination:
            self._close_destination = False
            with contextlib.suppress(Exception):
                await self.destination.aclose()

    def _mirror_failed(self, exc: BaseException) -> None:
        """Write-through failed: the sides may differ, so the job is over."""
        if self.state is MirrorState.READY:
            self.state = MirrorState.FAILED
            self.error = exc
            self.filter.detach()
            self._ended.set()
            log.warning("mirror job failed in write-through: %s", exc)

    async def _run(self) -> None:
        dirty = self.filter.dirty
        assert dirty is not None
        try:
            while True:
                await self._pass(len(self._passes) + 1)
                # Flushing after each pass leaves little for the flush in the pause,
                # and the dirty set is measured after it, as the pause will see it.
                await self.destination.flush()
                remaining = dirty.count * self.granularity
                if remaining <= self.dirty_threshold or len(self._passes) >= self.max_iterations:
                    break
            await self._pause_and_pivot()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            cause = first_cause(exc)
            log.warning("mirror job failed: %s", cause)
            await self._end(MirrorState.FAILED, cause)

    async def _pass(self, iteration: int) -> None:
        dirty = self.filter.dirty
        assert dirty is not None
        started = time.monotonic()
        dirty_bytes = dirty.count * self.granularity
        copied = Copied()
        slots = asyncio.Semaphore(self._max_in_flight)

        async def copy_chunk(first: int, count: int) -> None:
            try:
                result = await self._copy_blocks(first, count)
                copied.add(result)
                self._copied.add(result)  # live progress, not only per pass
            finally:
                slots.release()

        async with asyncio.TaskGroup() as group:
            pos = 0
            while (first := dirty.find(True, pos)) < dirty.nbits:
                await slots.acquire()
                first = dirty.find(True, first)  # a write may have moved the start
                end = dirty.find(False, first, min(first + self._chunk_blocks, dirty.nbits))
                if first >= dirty.nbits:
                    slots.release()
                    break
                dirty.clear(first, end - first)  # before the read: see MirrorFilter
                group.create_task(copy_chunk(first, end - first))
                pos = end
        stats = PassStats(
            iteration, dirty_bytes, copied.data_bytes, copied.zero_bytes, time.monotonic() - started
        )
        self._passes.append(stats)
        log.info("mirror pass %s", stats)

    async def _copy_blocks(self, first: int, count: int) -> Copied:
        dirty = self.filter.dirty
        offset = first * self.granularity
        length = min(count * self.granularity, self.filter.size - offset)
        try:
            return await copy_range(
                self.filter.next, self.destination, offset, length, limiter=self.limiter
            )
        except BaseException:
            if dirty is not None:
                dirty.set(first, count)  # not copied after all
            raise

    async def _pause_and_pivot(self) -> None:
        self.state = MirrorState.PAUSED
        started = time.monotonic()
        self.filter.close_gate()
        try:
            await self.filter.drained()
            # Nothing can dirty a block now; copy what is left at full speed.
            rate, self.limiter.rate = self.limiter.rate, None
            try:
                await self._pass(len(self._passes) + 1)
            finally:
                self.limiter.rate = rate
            await self.destination.flush()
            self.filter.write_through(self.destination, self._mirror_failed)
        finally:
            self.filter.open_gate()
            self._downtime = time.monotonic() - started
        self.state = MirrorState.READY
        self.ready.set()
        log.info(
            "mirror ready after %d passes, pause %.1f ms", len(self._passes), self._downtime * 1000
        )
