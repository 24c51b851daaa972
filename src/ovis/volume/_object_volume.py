"""ObjectVolume: a BlockDevice serving one volume from its inode and objects.

Byte offset o lies in object index o // object_size, owned by
`inode.owners[index]`.  Reads of index with owner 0 are zeros.  The first
write to an object owned by anyone else copies it up: the whole object is
read from the owner (or taken as zeros), the new bytes are laid over it, and
it is created as this volume's own object before the owner array changes.
Writes to one object are serialised by a per-object lock, so two writes
cannot both copy it up.

Durability: `flush` (and FUA) syncs the data objects written since the last
flush, then writes and syncs the inode if it changed, then removes objects
that were deallocated: metadata reaches the disk only after the data it
describes, and data is removed only after no durable metadata names it.

Multi-conn: every connection to one volume must share one ObjectVolume
instance (VolumeLibrary.open hands out one writer per volume), since the
owner array and the set of objects to sync live in it.  Given that, a flush
on any connection covers writes from all of them, so can_multi_conn is True.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from ovis.block._device import BlockDevice, BlockError, Buffer, Capabilities, Extent, MiB
from ovis.nbd._constants import Errno, StateFlag
from ovis.store import KeyedLock, ObjectNotFound, ObjectStore

from ._gate import IOGate
from ._inode import Inode
from ._oid import data_oid, inode_oid, parse_oid

MAX_EXTENTS = 4096  # per extents() call: bounds the reply, the client asks again
# Reserve more versions once fewer than this remain: more than the requests
# in flight could ever take (a 32 MiB write at 4 KiB objects takes 8193).
_LOW_WATER = 1 << 24
_HOLE = StateFlag.HOLE | StateFlag.ZERO


class ObjectVolume(BlockDevice):
    """A volume (writable) or snapshot (read-only) as a BlockDevice.

    Built by VolumeLibrary.open.  For a writable volume, `inode` must already
    be durable with `versions_reserved >= next_version`: every version this
    device hands out comes from that reservation, and it reserves more (by
    writing the inode) before it runs out.
    """

    def __init__(
        self,
        store: ObjectStore,
        inode: Inode,
        *,
        writable: bool,
        next_version: int = 0,
        on_close: Callable[[ObjectVolume], None] | None = None,
    ) -> None:
        self._store = store
        self._inode = inode
        self._writable = writable
        self._on_close = on_close
        self._gate = IOGate()
        self._object_locks = KeyedLock()
        self._commit_lock = asyncio.Lock()
        self._dirty: set[int] = set()  # data objects written since the last commit
        self._doomed: set[int] = set()  # own objects deallocated, to remove after commit
        self._inode_dirty = False
        self._next_version = next_version
        self._durable_reserved = inode.versions_reserved
        self._extending: asyncio.Future[None] | None = None
        self._closed = False
        w = writable
        self._capabilities = Capabilities(
            can_write=w, can_flush=w, can_fua=w, can_trim=w, can_zero=w, can_fast_zero=w,
            can_extents=True, can_multi_conn=True, preferred_block=4096, max_block=32 * MiB,
        )  # fmt: skip

    # -- identity ---------------------------------------------------------------

    @property
    def inode(self) -> Inode:
        """The live inode; callers must not change it."""
        return self._inode

    @property
    def size(self) -> int:
        return self._inode.size

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- BlockDevice operations -------------------------------------------------

    async def read(self, offset: int, length: int) -> Buffer:
        self._check_open()
        async with self._gate.io():
            pieces = list(self._pieces(offset, length))
            if len(pieces) == 1:
                return await self._read_piece(pieces[0][0], pieces[0][1], length)
            out = bytearray(length)
            for index, at, start, n in pieces:
                out[start : start + n] = await self._read_piece(index, at, n)
            return out

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        self._check_writable()
        view = memoryview(data).cast("B")
        async with self._gate.io():
            await self._ensure_versions()
            for index, at, start, n in self._pieces(offset, len(view)):
                async with self._object_locks.hold(index):
                    await self._write_locked(index, at, view[start : start + n])
            if fua:
                await self._commit()

    async def flush(self) -> None:
        self._check_open()
        if self._writable:
            async with self._gate.io():
                await self._commit()

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        await self._clear(offset, length, fua=fua, partial_shared=False)

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        # Whole objects are always deallocated, NO_HOLE or not: an object of
        # zeros would cost as much to keep as it is worth, and a hole reads
        # as zeros.  So zeroing is always cheap, and `fast` never refuses.
        await self._clear(offset, length, fua=fua, partial_shared=True)

    async def extents(self, offset: int, length: int) -> list[Extent]:
        self._check_open()
        runs: list[list[int]] = []
        for index, _, _, n in self._pieces(offset, length):
            flags = _HOLE if self._inode.owners[index] == 0 else 0
            if runs and runs[-1][1] == flags:
                runs[-1][0] += n
            elif len(runs) == MAX_EXTENTS:
                break
            else:
                runs.append([n, flags])
        return [Extent(n, StateFlag(flags)) for n, flags in runs]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._writable:
                await self._commit()
        finally:
            if self._on_close is not None:
                self._on_close(self)

    # -- the object model -------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BlockError(Errno.ESHUTDOWN, f"volume {self._inode.name!r} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if not self._writable:
            raise BlockError(Errno.EPERM, "snapshots are read-only")

    def _pieces(self, offset: int, length: int) -> Iterator[tuple[int, int, int, int]]:
        """Split a range by object: (index, offset in object, offset in range, length)."""
        size = self._inode.object_size
        start = 0
        while start < length:
            index, at = divmod(offset + start, size)
            n = min(size - at, length - start)
            yield index, at, start, n
            start += n

    def _covers_object(self, index: int, at: int, n: int) -> bool:
        """Whether [at, at+n) is all of object `index` that lies inside the volume."""
        end = min(self._inode.object_size, self._inode.size - index * self._inode.object_size)
        return at == 0 and n >= end

    async def _read_piece(self, index: int, at: int, n: int) -> Buffer:
        for _ in range(3):
            owner = self._inode.owners[index]
            if owner == 0:
                return bytes(n)
            try:
                return await self._store.read(data_oid(owner, index), at, n)
            except ObjectNotFound:
                if self._inode.owners[index] == owner:
                    raise  # not a race with a trim: the data really is missing
        raise BlockError(Errno.EIO, f"object {index} keeps moving under a read")

    async def _write_locked(self, index: int, at: int, data: memoryview) -> None:
        """Write into object `index`, copying it up first if this volume does not own it."""
        vid = self._inode.vid
        oid = data_oid(vid, index)
        owner = self._inode.owners[index]
        if owner == vid:
            await self._store.write(oid, at, data, self._take_version())
        else:
            image: memoryview | bytearray
            if owner == 0 or self._covers_object(index, at, len(data)):
                image = bytearray(at) + data
            else:
                size = self._inode.object_size
                image = memoryview(await self._store.read(data_oid(owner, index), 0, size))
                if image.readonly:
                    image = memoryview(bytearray(image))
                image[at : at + len(data)] = data  # the store's fresh buffer: no copy
            await self._store.create_and_write(oid, image, self._take_version())
            self._inode.owners[index] = vid
            self._inode_dirty = True
            self._doomed.discard(oid)
        self._dirty.add(oid)

    async def _clear(self, offset: int, length: int, *, fua: bool, partial_shared: bool) -> None:
        """Deallocate whole objects; zero partial ones if owned (or if `partial_shared`)."""
        self._check_writable()
        async with self._gate.io():
            await self._ensure_versions()
            for index, at, _, n in self._pieces(offset, length):
                async with self._object_locks.hold(index):
                    owner = self._inode.owners[index]
                    if self._covers_object(index, at, n):
                        self._deallocate(index)
                    elif owner == self._inode.vid or (owner and partial_shared):
                        await self._write_locked(index, at, memoryview(bytes(n)))
            if fua:
                await self._commit()

    def _deallocate(self, index: int) -> None:
        owner = self._inode.owners[index]
        if owner == 0:
            return
        self._inode.owners[index] = 0
        self._inode_dirty = True
        if owner == self._inode.vid:  # nobody else can name our own objects
            self._doomed.add(data_oid(owner, index))

    # -- versions and commits ---------------------------------------------------

    def _take_version(self, limit: int | None = None) -> int:
        if self._next_version > (self._durable_reserved if limit is None else limit):
            raise BlockError(Errno.EIO, "volume ran out of reserved object versions")
        self._next_version += 1
        return self._next_version - 1

    async def _ensure_versions(self) -> None:
        """Reserve a new block of versions, durably, when running low.

        Called before an operation takes object locks, since it commits.
        """
        while self._extending is not None:
            await self._extending
        if self._durable_reserved - self._next_version >= _LOW_WATER:
            return
        extending = self._extending = asyncio.get_running_loop().create_future()
        try:
            self._inode.reserve_versions()
            self._inode_dirty = True
            await self._commit()
        finally:
            self._extending = None
            extending.set_result(None)

    async def _commit(self) -> None:
        """Sync data written so far, then the inode, then drop deallocated objects."""
        async with self._commit_lock:
            vid = self._inode.vid
            dirty, self._dirty = self._dirty, set()
            doomed, self._doomed = self._doomed, set()
            image, reserved = None, self._inode.versions_reserved
            if self._inode_dirty:
                self._inode_dirty = False
                image = self._inode.encode()
            try:
                await self._store.sync(dirty)
                if image is not None:
                    version = self._take_version(limit=reserved)
                    await self._store.create_and_write(inode_oid(vid), image, version)
                    await self._store.sync([inode_oid(vid)])
                    self._durable_reserved = max(self._durable_reserved, reserved)
            except BaseException:
                self._dirty |= dirty
                self._doomed |= doomed
                self._inode_dirty |= image is not None
                raise
            for oid in doomed:
                await self._remove_if_unused(oid)

    async def _remove_if_unused(self, oid: int) -> None:
        index = parse_oid(oid).index
        async with self._object_locks.hold(index):
            owners = self._inode.owners
            if index < len(owners) and owners[index] == self._inode.vid:
                return  # written again since it was deallocated
            try:
                await self._store.remove(oid)
            except BlockError:
                self._doomed.add(oid)  # try again at the next commit; gc() also finds it

    # -- for VolumeLibrary ------------------------------------------------------

    def exclusive(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Stop I/O on this device for a management operation."""
        return self._gate.exclusive()

    async def commit(self) -> None:
        """Make everything written durable (what flush does), inside `exclusive()` too."""
        if self._writable:
            await self._commit()

    def retarget(self, inode: Inode, next_version: int) -> None:
        """Continue as the volume `inode` (after a snapshot); call inside `exclusive()`."""
        assert not (self._dirty or self._inode_dirty), "commit first"
        self._doomed.clear()  # removals that failed: leaks for gc() now
        self._inode = inode
        self._next_version = next_version
        self._durable_reserved = inode.versions_reserved

    async def resize(self, size: int) -> None:
        """Change the size, zeroing what a shrink cuts from the last object; inside exclusive()."""
        await self._ensure_versions()
        old = self._inode.size
        if size < old:
            await self._clear_tail(size, old)
        self._inode.resize(size)
        self._inode_dirty = True
        await self._commit()

    async def _clear_tail(self, size: int, old: int) -> None:
        for index, at, _, n in list(self._pieces(size, old - size)):
            async with self._object_locks.hold(index):
                if at == 0:
                    self._deallocate(index)
                elif self._inode.owners[index]:
                    await self._write_locked(index, at, memoryview(bytes(n)))
