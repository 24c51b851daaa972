"""Recovery: after every epoch change, make this node hold what placement now gives it.

Design note.
- Plan (per epoch E): ask every member of E for its (oid, version) list.  All
  must answer in E, or the plan is retried: a partial list never counts as
  complete, since an object missing from it would be taken for absent.  The
  plan is the set of objects placed on this node in E whose local copy is
  missing or older than the newest version any member holds, with the
  members holding that version.
- Copy: pending objects are fetched in oid order, throttled to `max_rate`
  bytes/s (the background loop only: an out-of-order fetch for a client is
  never held back).  An object held locally at an older version is patched:
  only the 64 KiB sub-blocks whose CRC differs from the newest copy's are
  read (the stores keep those CRCs, so comparing costs no data reads).  Each
  copy is written with its version (an older copy never replaces a newer
  one: the store refuses it) and synced.  Resumable by construction: after a restart
  the plan compares versions again and skips what was already copied.
- Out of order: the StorageService calls `ensure_current(oid)` before serving
  a client request on a local copy.  Once the plan is ready, a pending object
  is fetched at once; before that (while lists are being gathered) the object
  is checked directly, by asking every member for its version.  Either way
  every write of E reaches this node only after its copy is current, so a
  copy fetched while writes go on is completed by those writes.
- Capacity: before each fetch the data directory must keep `reserve` bytes
  free after it; if not, recovery waits (and says so in `status`).
- Suspects: a copy a failed write dropped here (StorageService) is fetched
  again before any use (ensure_current), and in the background every
  SUSPECT_RETRY seconds while the data directory has room.
- A node left out of the current epoch (frozen, cut off) neither copies
  nor purges: placement gives it nothing there, and what it holds waits
  for the epoch it rejoins in.
- Purge: copies this node holds but placement no longer gives it are removed
  only once every member of E has reported (key `ovis/recovery/<id>`) that it
  finished E.  A newer epoch restarts the whole cycle.
- Known limit: a copy of an object removed while this node was away comes
  back as a leak if placement gives it to this node again; nothing names it,
  and `ovis vdi gc` removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ovis.block._device import BlockError
from ovis.coord import Coordinator, CoordinatorError
from ovis.store import ObjectNotFound, StaleVersion

from ._model import ClusterView, Epoch, NodeInfo, PeerUnavailable, WrongEpoch
from ._peer_client import PeerPool
from ._service import StorageService

log = logging.getLogger("ovis.cluster.recovery")
PREFIX_RECOVERY = "ovis/recovery/"
SUB_BLOCK = 64 * 1024
_RETRYABLE = (PeerUnavailable, WrongEpoch, CoordinatorError)
SUSPECT_RETRY = 5.0  # seconds between tries to fetch again copies a failed write dropped


class Recovery:
    """One node's recovery worker; `notify(epoch)` on every epoch change."""

    def __init__(
        self,
        service: StorageService,
        view: ClusterView,
        pool: PeerPool,
        coord: Coordinator,
        data_dir: str | os.PathLike[str],
        *,
        max_rate: int = 0,
        reserve: int = 256 * 1024 * 1024,
    ) -> None:
        self._service = service
        self._store = service.store
        self._view = view
        self._pool = pool
        self._coord = coord
        self._data_dir = os.fspath(data_dir)
        self._reserve = reserve
        self.max_rate = max_rate  # bytes/s, 0: unlimited
        self._plan_epoch = -1  # the epoch whose plan is ready
        self._pending: dict[int, tuple[int, tuple[NodeInfo, ...]]] = {}
        self._verified: set[int] = set()  # checked one by one before the plan was ready
        self._inflight: dict[int, asyncio.Future[int]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sent = 0.0  # throttle: bytes sent in the current second
        self._window = time.monotonic()
        self.stats: dict[str, Any] = {"state": "idle", "epoch": 0}

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._service.ensure_current = self.ensure_current
        self._service.on_suspect = self.notify
        self._task = asyncio.create_task(self._run(), name="ovis-recovery")
        self.notify()

    def notify(self) -> None:
        """The epoch changed (or may have): plan again."""
        self._wake.set()

    async def aclose(self) -> None:
        self._service.ensure_current = None
        self._service.on_suspect = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def status(self) -> dict[str, Any]:
        return {
            **self.stats,
            "max_rate": self.max_rate,
            "pending": len(self._pending),
            "suspect": len(self._service.suspect),
        }

    # -- the hook ------------------------------------------------------------------------

    async def ensure_current(self, oid: int) -> None:
        """Bring the local copy of `oid` up to date before a client uses it."""
        epoch = self._view.epoch
        if oid in self._service.suspect:  # a failed write dropped it: fetch the newest
            await self._once(oid, functools.partial(self._refetch, oid, epoch))
            return
        if self._plan_epoch == epoch.number:
            if oid in self._pending:
                await self._once(oid, lambda: self._recover(oid, epoch))
            return
        if oid in self._verified:
            return
        await self._once(oid, lambda: self._check(oid, epoch))
        if self._view.epoch.number == epoch.number:
            self._verified.add(oid)

    async def _once(self, oid: int, work: Callable[[], Awaitable[int]]) -> int:
        """Run `work` for `oid` unless a run is in flight; then wait for that one.

        Returns the bytes it copied.  Only the background loop waits on the
        throttle, and it does so after the copy: a client waiting here for an
        object it is about to use never waits for the rate limit.
        """
        running = self._inflight.get(oid)
        if running is None:
            running = self._inflight[oid] = asyncio.ensure_future(work())
            running.add_done_callback(lambda _: self._inflight.pop(oid, None))
        return await asyncio.shield(running)

    async def _check(self, oid: int, epoch: Epoch) -> int:
        """Before the plan: ask every member for its version of `oid`; fetch if newer."""
        local = await self._local_version(oid)
        best, holders = local or 0, []
        for node in epoch.members:
            if node.id == self._view.node_id:
                continue
            try:
                version = (await self._pool.stat(node.peer, epoch.number, oid, raw=True)).version
            except ObjectNotFound:
                continue
            if version > best:
                best, holders = version, [node]
            elif version == best:
                holders.append(node)
        if holders and (local is None or best > local):
            return await self._fetch(oid, best, tuple(holders), epoch)
        return 0

    async def _refetch(self, oid: int, epoch: Epoch) -> int:
        """Fetch the newest copy of a suspect `oid`; it is no longer suspect after."""
        sent = await self._check(oid, epoch)
        if self._view.epoch.number == epoch.number:  # (no await since: a failure after
            self._service.suspect.discard(oid)  # this re-marks it, and is not undone)
        return sent

    async def _recover(self, oid: int, epoch: Epoch) -> int:
        entry = self._pending.get(oid)
        if entry is None:
            return 0
        sent = await self._fetch(oid, entry[0], entry[1], epoch)
        self._pending.pop(oid, None)
        return sent

    # -- the background loop --------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            retry = SUSPECT_RETRY if self._service.suspect else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), retry)
            self._wake.clear()
            epoch = self._view.epoch
            if not epoch.members:
                continue
            if self._view.node_id not in epoch.ids:
                # Left out of this epoch (say, frozen past its session): it holds
                # nothing there, and copies it keeps wait for the epoch it rejoins in.
                self.stats = {"state": "not a member", "epoch": epoch.number}
                continue
            try:
                if self._plan_epoch != epoch.number:
                    await self._cycle(epoch)
                if self._plan_epoch == epoch.number:
                    await self._refetch_suspects(epoch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the worker alive: the next epoch retries
                log.exception("recovery of epoch %d failed: %s", epoch.number, exc)
                self.stats.update(state="failed", error=str(exc))
                await asyncio.sleep(1)
                self._wake.set()

    async def _refetch_suspects(self, epoch: Epoch) -> None:
        """Fetch again the copies failed writes dropped here, while there is room."""
        for oid in sorted(self._service.suspect):
            if self._view.epoch.number != epoch.number or self._short_of_space() is not None:
                return
            try:
                sent = await self._once(oid, functools.partial(self._refetch, oid, epoch))
            except (BlockError, CoordinatorError) as exc:
                log.info("object %016x: cannot fetch it again yet: %s", oid, exc)
                continue
            await self._throttle(sent)

    async def _cycle(self, epoch: Epoch) -> None:
        """Plan, copy and (once everyone is done) purge, for one epoch."""
        started = time.monotonic()
        self._verified.clear()
        self.stats = {"state": "gathering", "epoch": epoch.number, "started": time.time()}
        plan = await self._gather(epoch)
        if plan is None:
            return  # the epoch moved on
        self._pending, self._plan_epoch = plan, epoch.number
        total = len(plan)
        self.stats.update(state="recovering", objects=total, copied=0, bytes=0)
        log.info("epoch %d: %d objects to recover", epoch.number, total)
        for oid in sorted(plan):
            if self._view.epoch.number != epoch.number:
                return
            if oid in self._pending:
                await self._space_for(oid)
                sent = await self._once(oid, functools.partial(self._recover, oid, epoch))
                await self._throttle(sent)
            self.stats["copied"] = total - len(self._pending)
        took = time.monotonic() - started
        self.stats.update(state="waiting for peers", seconds=round(took, 3))
        log.info(
            "epoch %d: recovery done in %.2f s (%d bytes)", epoch.number, took, self.stats["bytes"]
        )
        await self._report(epoch, done=True)
        if await self._everyone_done(epoch):
            purged = await self._purge(epoch)
            self.stats.update(state="done", purged=purged)

    async def _gather(self, epoch: Epoch) -> dict[int, tuple[int, tuple[NodeInfo, ...]]] | None:
        """The plan of `epoch`, from every member's list; None if the epoch changed."""
        while self._view.epoch.number == epoch.number:
            try:
                lists = await asyncio.gather(*(self._list(node, epoch) for node in epoch.members))
            except _RETRYABLE as exc:
                log.info("epoch %d: object lists incomplete (%s); retrying", epoch.number, exc)
                with contextlib.suppress(TimeoutError):
                    await self._view.wait_epoch(epoch.number, timeout=0.5)
                continue
            newest: dict[int, tuple[int, list[NodeInfo]]] = {}
            mine: dict[int, int] = {}
            for node, listed in zip(epoch.members, lists, strict=True):
                for oid, version in listed:
                    if node.id == self._view.node_id:
                        mine[oid] = version
                        continue
                    best = newest.get(oid)
                    if best is None or version > best[0]:
                        newest[oid] = (version, [node])
                    elif version == best[0]:
                        best[1].append(node)
            me = self._view.node_id
            return {
                oid: (version, tuple(holders))
                for oid, (version, holders) in newest.items()
                if mine.get(oid, -1) < version and any(n.id == me for n in epoch.replicas(oid))
            }
        return None

    async def _list(self, node: NodeInfo, epoch: Epoch) -> list[tuple[int, int]]:
        if node.id == self._view.node_id:
            return await self._service.list(epoch.number)
        return await self._pool.list(node.peer, epoch.number)

    # -- copying one object -------------------------------------------------------------------

    async def _fetch(
        self, oid: int, version: int, holders: tuple[NodeInfo, ...], epoch: Epoch
    ) -> int:
        """Copy `oid` at `version` (or newer) from one of `holders`; the bytes sent."""
        last: BlockError | None = None
        for holder in holders:
            try:
                copy = await self._patched(oid, version, holder, epoch)
                if copy is None:
                    return 0
                with contextlib.suppress(StaleVersion):  # a newer write got here first
                    await self._store.create_and_write(oid, copy.data, copy.version)
                await self._store.sync([oid])
                self.stats["bytes"] = self.stats.get("bytes", 0) + copy.sent
                return copy.sent
            except (PeerUnavailable, WrongEpoch, ObjectNotFound) as exc:
                last = exc
        raise last or PeerUnavailable("any", f"no holder of object {oid:016x}")

    async def _patched(
        self, oid: int, version: int, holder: NodeInfo, epoch: Epoch
    ) -> _Copy | None:
        """The newest bytes of `oid`: patched sub-blocks over the local copy, or whole."""
        local = await self._local_version(oid)
        if local is not None and local >= version:
            return None
        if local is not None:
            theirs = await self._pool.checksums(holder.peer, epoch.number, oid)
            ours = await self._service.checksums(epoch.number, oid)
            if theirs[0] >= version:
                length = theirs[1]
                data = bytearray(await self._store.read(oid, 0, length))
                sent = 0
                for i, crc in enumerate(theirs[2]):
                    if i < len(ours[2]) and ours[2][i] == crc:
                        continue
                    at = i * SUB_BLOCK
                    n = min(SUB_BLOCK, length - at)
                    if n <= 0:
                        break
                    data[at : at + n] = await self._pool.read(
                        holder.peer, epoch.number, oid, at, n, raw=True
                    )
                    sent += n
                return _Copy(data, theirs[0], sent)
        got, whole = await self._pool.read_object(holder.peer, epoch.number, oid, raw=True)
        return _Copy(bytearray(whole), got, len(whole))

    async def _local_version(self, oid: int) -> int | None:
        try:
            return (await self._store.stat(oid)).version
        except ObjectNotFound:
            return None

    async def _throttle(self, nbytes: int) -> None:
        if self.max_rate <= 0:
            return
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._sent = now, 0.0
        self._sent += nbytes
        if self._sent > self.max_rate:
            await asyncio.sleep(self._sent / self.max_rate - (now - self._window))

    def _short_of_space(self) -> int | None:
        """The bytes free if the data directory lacks room for one more object plus the
        reserve, else None."""
        st = os.statvfs(self._data_dir)
        free = st.f_bavail * st.f_frsize
        return None if free > self._reserve + 64 * 1024 * 1024 else free

    async def _space_for(self, oid: int) -> None:
        """Wait until the data directory has room for one more object plus the reserve."""
        while (free := self._short_of_space()) is not None:
            self.stats["state"] = f"waiting for space ({free} bytes free)"
            await asyncio.sleep(1)

    # -- finishing --------------------------------------------------------------------------------

    async def _report(self, epoch: Epoch, *, done: bool) -> None:
        value = json.dumps({"epoch": epoch.number, "done": done, **self.stats}).encode()
        with contextlib.suppress(CoordinatorError):
            await self._coord.put(PREFIX_RECOVERY + self._view.node_id, value)

    async def _everyone_done(self, epoch: Epoch) -> bool:
        """Wait until every member reports epoch `epoch` done; False if the epoch moves on."""
        while self._view.epoch.number == epoch.number:
            try:
                reports, _ = await self._coord.list(PREFIX_RECOVERY)
            except CoordinatorError:
                reports = []
            done = set()
            for kv in reports:
                with contextlib.suppress(ValueError, KeyError):
                    report = json.loads(kv.value)
                    if report["epoch"] == epoch.number and report["done"]:
                        done.add(kv.key.removeprefix(PREFIX_RECOVERY))
            if epoch.ids <= done:
                return True
            with contextlib.suppress(TimeoutError):
                await self._view.wait_epoch(epoch.number, timeout=0.5)
        return False

    async def _purge(self, epoch: Epoch) -> int:
        """Remove local copies placement no longer gives this node."""
        me, purged = self._view.node_id, 0
        for oid in await self._store.list():
            if self._view.epoch.number != epoch.number:
                break
            if not any(n.id == me for n in epoch.replicas(oid)):
                await self._store.remove(oid)
                purged += 1
        if purged:
            await self._store.sync()
            log.info("epoch %d: purged %d copies placed elsewhere", epoch.number, purged)
        return purged


@dataclasses.dataclass(slots=True)
class _Copy:
    """An object's bytes, the version they are, and how many crossed the network."""

    data: bytearray
    version: int
    sent: int
