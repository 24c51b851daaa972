"""ReplicatedObjectStore: the gateway every node runs in front of the cluster.

It is an ObjectStore, so the volume layer (VolumeLibrary, ObjectVolume)
runs on it unchanged.  Each call is routed by placement in the current epoch:

- Mutations (write, create, remove) go to every replica of the object in the
  epoch, and return only when all of them have applied it (DRBD protocol C).
  `sync` returns only when all of them have made it durable, so a FLUSH
  acknowledged by a node survives the loss of copies-1 nodes.  The local
  replica is called directly, the others over PeerPool, concurrently.
- Reads go to the local replica when this node is one (the StorageService
  first brings a stale local copy up to date: recovery's `ensure_current`),
  else to the replicas in placement order.  A replica whose copy fails its
  checksum, or cannot be read at all (a full disk refusing to take the
  newest copy back), is skipped; the next one serves the read.
- Every request carries the epoch number.  A replica on a newer epoch
  answers WrongEpoch: the gateway waits until it knows that epoch and
  retries with the new placement.  A replica that does not answer
  (PeerUnavailable) or is cut off from quorum (NotAccepting) makes the
  gateway wait for the next epoch, which the Coordinator produces once that
  node's session expires; the retry then goes to the new replica set.
  Retrying is safe because every mutation carries its version and replicas
  accept an equal version again (idempotent).  After `retry_deadline`
  seconds without success the call fails with EIO: nothing was acknowledged.
- Fencing: writes to volume `vid` carry the token bound with `bind(vid,
  token)` (the node's attach lease), or 0.  Inside `management()` they carry
  MANAGEMENT_TOKEN instead (volume management on volumes nobody attached).
  A vid whose lease was lost is `revoke`d: writes to it fail with EPERM here,
  before reaching any replica.
- This node must itself be in quorum (its session alive) to acknowledge a
  write; otherwise it waits, as for an unavailable replica.

Degraded placement: with fewer zones than copies, objects get one replica
per zone (Sheepdog's non-strict mode) and recovery adds the missing copies
when nodes return.  Protocols A and B (acknowledge after the local write, or
after the peers received it) are documented in docs/cluster.md and not
offered: they would lose acknowledged writes when a node dies.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import TypeVar

from ovis.block._device import BlockError, Buffer
from ovis.nbd._constants import Errno
from ovis.store import ChecksumError, ObjectNotFound, ObjectStat, ObjectStore, StoreClosed
from ovis.store._interface import check_oid, check_range, check_version

from ._model import ClusterView, Epoch, NodeInfo, NotAccepting, PeerUnavailable, WrongEpoch
from ._peer_client import PeerPool
from ._service import MANAGEMENT_TOKEN, StorageService, vid_of

log = logging.getLogger("ovis.cluster")
T = TypeVar("T")

_management = contextvars.ContextVar("ovis_cluster_management", default=False)
_RETRYABLE = (WrongEpoch, PeerUnavailable, NotAccepting)


class ReplicatedObjectStore(ObjectStore):
    """An ObjectStore whose objects live on `copies` nodes of the current epoch."""

    def __init__(
        self,
        service: StorageService,
        view: ClusterView,
        pool: PeerPool,
        *,
        retry_deadline: float = 30.0,
    ) -> None:
        self._service = service
        self._view = view
        self._pool = pool
        self._deadline = retry_deadline
        self._tokens: dict[int, int] = {}
        self._revoked: dict[int, str] = {}
        self._closed = False

    # -- fencing ---------------------------------------------------------------

    def bind(self, vid: int, token: int) -> None:
        """Writes to volume `vid` carry `token` from now on (its attach lease)."""
        self._tokens[vid] = token
        self._revoked.pop(vid, None)

    def revoke(self, vid: int, reason: str) -> None:
        """The lease on `vid` is gone: refuse its writes here with EPERM."""
        self._tokens.pop(vid, None)
        self._revoked[vid] = reason

    def unbind(self, vid: int) -> None:
        """Forget `vid`'s token after a clean detach."""
        self._tokens.pop(vid, None)
        self._revoked.pop(vid, None)

    @staticmethod
    @contextlib.contextmanager
    def management() -> Iterator[None]:
        """Mutations made inside (by this task and tasks it starts) pass every fence."""
        reset = _management.set(True)
        try:
            yield
        finally:
            _management.reset(reset)

    def _check_held(self, oid: int) -> None:
        """EPERM if the lease on `oid`'s volume was lost (also while a write retries)."""
        vid = vid_of(oid)
        if vid in self._revoked:
            raise BlockError(
                Errno.EPERM, f"volume {vid}: this node no longer holds it ({self._revoked[vid]})"
            )

    def _token(self, oid: int) -> int:
        self._check_held(oid)
        token = self._tokens.get(vid_of(oid))
        if token is not None:
            return token
        return MANAGEMENT_TOKEN if _management.get() else 0

    async def fence(self, vid: int, token: int) -> None:
        """Raise `vid`'s fence to `token` on every member of the current epoch."""

        async def one(node: NodeInfo, epoch: int) -> None:
            if node.id == self._view.node_id:
                await self._service.fence(epoch, vid, token)
            else:
                await self._pool.fence(node.peer, epoch, vid, token)

        await self._everywhere(one, f"fence volume {vid}")

    # -- ObjectStore: reads ------------------------------------------------------

    async def read(self, oid: int, offset: int, length: int) -> Buffer:
        check_oid(oid)
        check_range(offset, length)
        return await self._read_any(
            oid,
            lambda e: self._service.read(e, oid, offset, length),
            lambda node, e: self._pool.read(node.peer, e, oid, offset, length),
        )

    async def stat(self, oid: int) -> ObjectStat:
        check_oid(oid)
        return await self._read_any(
            oid,
            lambda e: self._service.stat(e, oid),
            lambda node, e: self._pool.stat(node.peer, e, oid),
        )

    async def list(self) -> list[int]:
        """Every oid on any member: complete, or it fails (all members must answer)."""
        self._check_open()
        found: set[int] = set()

        async def one(node: NodeInfo, epoch: int) -> None:
            if node.id == self._view.node_id:
                listed = await self._service.list(epoch)
            else:
                listed = await self._pool.list(node.peer, epoch)
            found.update(oid for oid, _ in listed)

        await self._everywhere(one, "list objects", reset=found.clear)
        return sorted(found)

    # -- ObjectStore: mutations --------------------------------------------------

    async def write(self, oid: int, offset: int, data: Buffer, version: int) -> None:
        check_oid(oid)
        check_range(offset, len(memoryview(data)))
        check_version(version)
        token = self._token(oid)
        await self._replicate(
            oid,
            lambda e: self._service.write(e, oid, offset, data, version, token),
            lambda node, e: self._pool.write(node.peer, e, oid, offset, data, version, token),
        )

    async def create_and_write(self, oid: int, data: Buffer, version: int) -> None:
        check_oid(oid)
        check_range(0, len(memoryview(data)))
        check_version(version)
        token = self._token(oid)
        await self._replicate(
            oid,
            lambda e: self._service.create(e, oid, data, version, token),
            lambda node, e: self._pool.create(node.peer, e, oid, data, version, token),
        )

    async def remove(self, oid: int) -> None:
        check_oid(oid)
        token = self._token(oid)
        await self._replicate(
            oid,
            lambda e: self._service.remove(e, oid, token),
            lambda node, e: self._pool.remove(node.peer, e, oid, token),
        )

    async def sync(self, oids: Collection[int] | None = None) -> None:
        self._check_open()
        if oids is not None and not oids:
            return
        wanted = None if oids is None else sorted(set(oids))

        async def one(node: NodeInfo, epoch: int, mine: builtins.list[int] | None) -> None:
            if node.id == self._view.node_id:
                await self._service.sync(epoch, mine)
            else:
                await self._pool.sync(node.peer, epoch, mine)

        await self._retrying("sync", lambda epoch: self._sync_calls(epoch, wanted, one))

    def _sync_calls(
        self,
        epoch: Epoch,
        wanted: builtins.list[int] | None,
        one: Callable[[NodeInfo, int, builtins.list[int] | None], Awaitable[None]],
    ) -> builtins.list[Awaitable[None]]:
        if wanted is None:
            return [one(node, epoch.number, None) for node in epoch.members]
        by_node: dict[str, builtins.list[int]] = {}
        for oid in wanted:
            for node in epoch.replicas(oid):
                by_node.setdefault(node.id, []).append(oid)
        members = {m.id: m for m in epoch.members}
        return [one(members[nid], epoch.number, mine) for nid, mine in by_node.items()]

    async def aclose(self) -> None:
        self._closed = True  # the node owns the service and the pool and closes them

    # -- routing and retries ---------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed()

    async def _read_any(
        self,
        oid: int,
        local: Callable[[int], Awaitable[T]],
        remote: Callable[[NodeInfo, int], Awaitable[T]],
    ) -> T:
        """Ask the replicas in turn (the local one first) until one answers."""
        self._check_open()
        deadline = time.monotonic() + self._deadline
        while True:
            epoch = self._epoch_or_fail()
            replicas = epoch.replicas(oid)
            ordered = sorted(replicas, key=lambda n: n.id != self._view.node_id)
            last: BlockError | None = None
            final: BlockError | None = None  # a failure no retry in this epoch fixes
            for node in ordered:
                try:
                    if node.id == self._view.node_id:
                        return await local(epoch.number)
                    return await remote(node, epoch.number)
                except ChecksumError as exc:
                    log.warning(
                        "object %016x: bad copy on %s, reading another: %s", oid, node.id, exc
                    )
                    final = exc
                except _RETRYABLE as exc:
                    last = exc
                except ObjectNotFound:
                    raise
                except BlockError as exc:  # this copy cannot be read (say, it is being
                    final = final or exc  # fetched again onto a full disk): the next one
                    log.warning("object %016x: cannot read it on %s: %s", oid, node.id, exc)
            if final is not None and last is None:
                raise final
            await self._wait_for_change(epoch, last, deadline, f"read object {oid:016x}")

    async def _replicate(
        self,
        oid: int,
        local: Callable[[int], Awaitable[None]],
        remote: Callable[[NodeInfo, int], Awaitable[None]],
    ) -> None:
        """Apply one mutation on every replica of `oid` in one epoch (protocol C)."""

        def calls(epoch: Epoch) -> builtins.list[Awaitable[None]]:
            return [
                local(epoch.number) if node.id == self._view.node_id else remote(node, epoch.number)
                for node in epoch.replicas(oid)
            ]

        # A write waiting out a partition must not outlive the lease: checked each round.
        await self._retrying(f"write object {oid:016x}", calls, lambda: self._check_held(oid))

    async def _everywhere(
        self,
        one: Callable[[NodeInfo, int], Awaitable[None]],
        what: str,
        reset: Callable[[], None] | None = None,
    ) -> None:
        """Run `one` on every member of one epoch; all must succeed in that epoch."""

        def calls(epoch: Epoch) -> builtins.list[Awaitable[None]]:
            if reset is not None:
                reset()
            return [one(node, epoch.number) for node in epoch.members]

        await self._retrying(what, calls)

    async def _retrying(
        self,
        what: str,
        calls: Callable[[Epoch], builtins.list[Awaitable[None]]],
        still_wanted: Callable[[], None] = lambda: None,
    ) -> None:
        """Run the calls of one epoch until all succeed in the same epoch, or give up.

        A retryable failure waits for a newer epoch (or, for a replica that is
        behind, a moment for it to catch up); an epoch change while replies are
        outstanding abandons them and starts over in the new epoch.
        """
        self._check_open()
        deadline = time.monotonic() + self._deadline
        while True:
            still_wanted()  # raises if the call must not go on
            epoch = self._epoch_or_fail()
            failure: BlockError | None
            if not self._view.accepting_writes():
                failure = NotAccepting("this node is cut off from the cluster's quorum")
            else:
                failure = await self._run_in_epoch(epoch, calls(epoch))
                if failure is None:
                    return
            await self._wait_for_change(epoch, failure, deadline, what)

    async def _run_in_epoch(
        self, epoch: Epoch, calls: builtins.list[Awaitable[None]]
    ) -> BlockError | None:
        """All calls' first retryable failure, or None; final errors are raised.

        A final error (say, ENOSPC on one replica) still waits for the other
        calls: abandoning them could leave some replicas with the mutation and
        some without, and no retry would come to even them out.  (The replica
        that failed drops its copy: see StorageService.)  Only an epoch change
        abandons calls, and the retry in the new epoch applies them again.
        """
        tasks: builtins.list[asyncio.Future[object]] = [asyncio.ensure_future(c) for c in calls]
        changed: asyncio.Future[object] = asyncio.ensure_future(self._view.wait_epoch(epoch.number))
        try:
            pending: set[asyncio.Future[object]] = {*tasks, changed}
            while not changed.done() and not all(t.done() for t in tasks):
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(changed, *tasks, return_exceptions=True)
        retryable: BlockError | None = None
        final: BaseException | None = None
        for task in tasks:
            if task.cancelled():
                retryable = retryable or WrongEpoch(epoch.number + 1, epoch.number)
                continue
            exc = task.exception()
            if exc is None:
                continue
            if isinstance(exc, _RETRYABLE):
                retryable = retryable or exc
            else:
                final = final or exc
        if final is not None and not any(task.cancelled() for task in tasks):
            raise final  # every call ran to its end: the replicas that failed dropped theirs
        return retryable  # (with calls abandoned, all go again in the new epoch)

    def _epoch_or_fail(self) -> Epoch:
        self._check_open()
        epoch = self._view.epoch
        if not epoch.members:
            raise BlockError(Errno.EIO, "this node has not joined the cluster yet")
        return epoch

    async def _wait_for_change(
        self, epoch: Epoch, failure: BlockError | None, deadline: float, what: str
    ) -> None:
        """Wait for the situation behind `failure` to change, or raise EIO at the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            detail = failure or BlockError(Errno.EIO, "no replica answered")
            raise BlockError(Errno.EIO, f"cannot {what} in epoch {epoch.number}: {detail}")
        if isinstance(failure, WrongEpoch) and failure.theirs <= epoch.number:
            await asyncio.sleep(min(0.05, left))  # the replica is behind: give it a moment
            return
        with contextlib.suppress(TimeoutError):
            await self._view.wait_epoch(epoch.number, timeout=min(left, 1.0))
