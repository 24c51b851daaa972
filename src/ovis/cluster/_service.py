"""StorageService: one node's replica of the cluster's objects, guarded.

Peers reach it over the peer protocol (PeerServer); the node's own gateway
calls it directly.  It is the node's LocalObjectStore behind the checks that
make replication safe, applied to every request in this order:

1. Epoch: a request carries the epoch number its sender routed it in.  If
   that is not this node's current epoch, placement may differ between the
   two, so the request is refused with `WrongEpoch` (raw or not, read or
   write) and the sender retries once the epochs agree.
2. Quorum (mutations and fence only): a node whose coordinator session may
   have expired must not take writes, since the cluster may already have
   moved on without it: `NotAccepting`.
3. Fencing (mutations only): the object's volume id is bits 32..55 of its
   oid.  A mutation whose token is below the volume's fence is refused with
   `Fenced`.  Fences only rise, by `fence()`, which persists the table
   before it returns so a restarted node still refuses the old writer.
   `MANAGEMENT_TOKEN` passes every fence and never raises one; token 0 (no
   lease) passes only a volume that was never fenced.

Then, for non-raw access, `ensure_current(oid)` lets recovery bring a stale
or missing local copy up to date before it is served (raw access is how
recovery itself reads between nodes, so it skips the hook: no cycles).

A mutation that fails here for a reason of this node's own (a full disk,
an I/O error, a corrupt or missing copy) may have succeeded on the other
replicas, so this copy is now behind them, and versions cannot tell: they
come from the volume's sequence, not one per object.  The copy is dropped
(which also frees its space) and its oid marked *suspect*: ensure_current
fetches the newest copy from the members before this node serves or
applies anything more to it, and recovery retries it in the background.

Mutations of one oid run one at a time, and `read_object`/`checksums` take
the same per-oid lock; the epoch, quorum and fence checks are repeated once
the lock is held and the hook has run, since either may have waited.
`fence()` returns only after every mutation of the volume that passed the
old fence has finished, so once a new writer has fenced, nothing from the old
one can land.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from pathlib import Path

from ovis.block._device import BlockError, Buffer, block_error_from_os
from ovis.store import KeyedLock, LocalObjectStore, ObjectStat, StaleVersion, StoreClosed
from ovis.store._interface import check_oid, check_version

from ._model import ClusterView, Fenced, NotAccepting, WrongEpoch

log = logging.getLogger("ovis.cluster")
MANAGEMENT_TOKEN = (1 << 64) - 1
MAX_VID = 0xFFFFFF


def vid_of(oid: int) -> int:
    """The volume id an object belongs to (bits 32..55 of its oid)."""
    return (oid >> 32) & MAX_VID


class StorageService:
    """The node's LocalObjectStore behind epoch, quorum and fencing checks.

    `fence_path` is where the fence table is kept (JSON); None keeps it in
    memory only (tests).  Raises ValueError at construction if the file
    exists but cannot be parsed: forgetting fences could let an old writer in.
    """

    def __init__(
        self, store: LocalObjectStore, view: ClusterView, fence_path: Path | None = None
    ) -> None:
        self.store = store
        self.ensure_current: Callable[[int], Awaitable[None]] | None = None
        self._view = view
        self._fence_path = fence_path
        self._fences = _load_fences(fence_path)
        self._saved = dict(self._fences)
        self._fence_lock = asyncio.Lock()
        self._locks = KeyedLock()
        self._applying: dict[int, int] = {}  # vid -> mutations past the fence check
        self._drained: dict[int, list[asyncio.Future[None]]] = {}
        # Local copies a failed mutation left behind the other replicas (dropped),
        # and who to tell when there is a new one (recovery).
        self.suspect: set[int] = set()
        self.on_suspect: Callable[[], None] | None = None

    # -- reads -----------------------------------------------------------------

    async def read(
        self, epoch: int, oid: int, offset: int, length: int, *, raw: bool = False
    ) -> Buffer:
        """`length` bytes of `oid` from `offset`.

        Raises WrongEpoch, ObjectNotFound, ChecksumError (or what the
        ensure_current hook raises).
        """
        self._check_epoch(epoch)
        await self._make_current(oid, raw)
        self._check_epoch(epoch)
        return await self.store.read(oid, offset, length)

    async def read_object(self, epoch: int, oid: int, *, raw: bool = False) -> tuple[int, bytes]:
        """The object's version and its `length` bytes, from one moment.

        Raises WrongEpoch, ObjectNotFound, ChecksumError.
        """
        self._check_epoch(epoch)
        await self._make_current(oid, raw)
        async with self._locks.hold(oid):
            self._check_epoch(epoch)
            version, data = await self.store.read_object(oid)
            return version, bytes(data)

    async def stat(self, epoch: int, oid: int, *, raw: bool = False) -> ObjectStat:
        """The object's version and length.  Raises WrongEpoch, ObjectNotFound."""
        self._check_epoch(epoch)
        await self._make_current(oid, raw)
        self._check_epoch(epoch)
        return await self.store.stat(oid)

    async def checksums(self, epoch: int, oid: int) -> tuple[int, int, list[int]]:
        """(version, length, CRC32 of each 64 KiB sub-block), from the header.

        For delta recovery: two copies whose CRC at index k match need not
        exchange sub-block k.  Never calls ensure_current.  Raises WrongEpoch,
        ObjectNotFound, ChecksumError.
        """
        self._check_epoch(epoch)
        async with self._locks.hold(oid):
            return await self.store.checksums(oid)

    async def list(self, epoch: int) -> list[tuple[int, int]]:
        """Every (oid, version) held here, sorted: complete, or it raises.

        An object whose header is unreadable is listed with version 0.
        Raises WrongEpoch (also if the epoch changed while listing), BlockError.
        """
        self._check_epoch(epoch)
        found = await self.store.versions()
        self._check_epoch(epoch)
        return found

    # -- mutations ----------------------------------------------------------------

    async def write(
        self, epoch: int, oid: int, offset: int, data: Buffer, version: int, token: int
    ) -> None:
        """Write `data` into the existing object at `offset` with `version`.

        Raises WrongEpoch, NotAccepting, Fenced, ObjectNotFound, StaleVersion,
        ChecksumError.
        """
        async with self._mutating(epoch, oid, token):
            await self._applied(oid, self.store.write(oid, offset, data, version))

    async def create(self, epoch: int, oid: int, data: Buffer, version: int, token: int) -> None:
        """Make the object hold exactly `data` (create_and_write).

        Raises WrongEpoch, NotAccepting, Fenced, StaleVersion.
        """
        async with self._mutating(epoch, oid, token):
            await self._applied(oid, self.store.create_and_write(oid, data, version))

    async def remove(self, epoch: int, oid: int, token: int) -> None:
        """Delete the object (a missing one is fine).  Raises WrongEpoch, NotAccepting, Fenced."""
        async with self._mutating(epoch, oid, token):
            await self.store.remove(oid)

    async def sync(self, epoch: int, oids: Collection[int] | None) -> None:
        """Make every returned mutation of `oids` (all if None) durable.  Raises WrongEpoch."""
        self._check_epoch(epoch)
        await self.store.sync(oids)

    # -- fencing ---------------------------------------------------------------------

    def fence_of(self, vid: int) -> int:
        """The volume's fence: the lowest token its mutations may carry (0 if none)."""
        return self._fences.get(vid, 0)

    async def fence(self, epoch: int, vid: int, token: int) -> None:
        """Raise volume `vid`'s fence to `token`.

        Equal to the fence: nothing changes.  Below it: raises Fenced, so the
        caller learns another writer has the volume.  Returns once the table
        is durable (if the service has a fence_path) and every mutation that
        passed the old fence has finished.  Raises WrongEpoch, NotAccepting,
        Fenced, BlockError if the table cannot be written (the fence
        is still raised in memory: refusing more is the safe side), and
        ValueError for a vid outside 24 bits or MANAGEMENT_TOKEN (a fence
        nobody could ever pass).
        """
        if not 0 <= vid <= MAX_VID:
            raise ValueError(f"volume id {vid} is not 24 bits")
        check_version(token)
        if token == MANAGEMENT_TOKEN:
            raise ValueError("MANAGEMENT_TOKEN cannot be a fence")
        self._check_epoch(epoch)
        self._check_accepting()
        async with self._fence_lock:
            current = self._fences.get(vid, 0)
            if token < current:
                raise Fenced(vid, token, current)
            self._fences[vid] = token  # from here on the old writer is refused
            if self._saved.get(vid, 0) != token:
                await self._save()
        while self._applying.get(vid):
            waiter = asyncio.get_running_loop().create_future()
            self._drained.setdefault(vid, []).append(waiter)
            await waiter

    # -- the checks ----------------------------------------------------------------------

    def _check_epoch(self, epoch: int) -> None:
        ours = self._view.epoch.number
        if epoch != ours:
            raise WrongEpoch(theirs=ours, ours=epoch)

    def _check_accepting(self) -> None:
        if not self._view.accepting_writes():
            raise NotAccepting(f"node {self._view.node_id} is not accepting writes")

    def _check_fence(self, vid: int, token: int) -> None:
        fence = self._fences.get(vid, 0)
        if token < fence and token != MANAGEMENT_TOKEN:
            raise Fenced(vid, token, fence)

    def _admit(self, epoch: int, vid: int, token: int) -> None:
        self._check_epoch(epoch)
        self._check_accepting()
        self._check_fence(vid, token)

    async def _make_current(self, oid: int, raw: bool) -> None:
        hook = self.ensure_current
        if hook is not None and not raw:
            await hook(oid)

    @contextlib.asynccontextmanager
    async def _mutating(self, epoch: int, oid: int, token: int) -> AsyncIterator[None]:
        """Checks, hook, per-oid lock, checks again; the body runs counted as applying."""
        check_oid(oid)
        check_version(token)
        vid = vid_of(oid)
        self._admit(epoch, vid, token)
        await self._make_current(oid, raw=False)
        async with self._locks.hold(oid):
            self._admit(epoch, vid, token)  # the lock or the hook may have waited
            self._applying[vid] = self._applying.get(vid, 0) + 1
            try:
                yield
            finally:
                left = self._applying[vid] - 1
                if left:
                    self._applying[vid] = left
                else:
                    del self._applying[vid]
                    for waiter in self._drained.pop(vid, []):
                        if not waiter.done():
                            waiter.set_result(None)

    async def _applied(self, oid: int, mutation: Awaitable[None]) -> None:
        """Run a mutation of `oid` (its lock held); if it fails here, drop the copy."""
        try:
            await mutation
        except (StaleVersion, StoreClosed):
            raise  # a newer copy is already here / the node is stopping: nothing lost
        except BlockError as exc:
            self.suspect.add(oid)
            if self.on_suspect is not None:
                self.on_suspect()
            log.warning("object %016x: a write failed here (%s); dropping this copy "
                        "until it is fetched again from the other replicas", oid, exc)  # fmt: skip
            try:
                await self.store.remove(oid)
            except BlockError as removing:
                log.warning("object %016x: cannot drop this copy: %s", oid, removing)
            raise

    async def _save(self) -> None:
        snapshot = dict(self._fences)
        if self._fence_path is not None:
            try:
                await asyncio.to_thread(_write_fences, self._fence_path, snapshot)
            except OSError as exc:
                raise block_error_from_os(exc) from exc
        self._saved = snapshot


def _load_fences(path: Path | None) -> dict[int, int]:
    if path is None or not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {int(vid): int(token) for vid, token in raw["fences"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"fence table {path} is unreadable: {exc}") from exc


def _write_fences(path: Path, fences: dict[int, int]) -> None:
    """Replace the table atomically: a crash leaves the old one or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    body = json.dumps({"fences": {str(vid): token for vid, token in sorted(fences.items())}})
    with open(tmp, "w") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
