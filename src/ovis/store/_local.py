"""LocalObjectStore: one sparse file per object under a data directory.

Layout: `<data_dir>/obj/<oid as 16 hex digits>` (format in _format.py) and a
`LOCK` file held with flock, so two processes never share a store.

I/O uses os.pread/os.pwrite on the event loop thread (they hit the page cache
and are short); only fdatasync/fsync, which wait for the disk, run in a thread.

Crash-safety trade-off of the checksums.  Data and its CRCs cannot reach the
disk atomically without a journal, so an object's header carries a DIRTY flag
that is made durable before its first write after it is opened and cleared on
a clean close (sync data, then write the clean header, then sync again).  An
object found DIRTY on open has its CRCs recomputed from its data.  So a crash
never turns unflushed writes into EIO, as a disk would not; the price is that
bit rot in an object being written when the node crashed goes undetected once.
It also costs one extra fdatasync on the first write to an object after it is
opened, and two on closing it (or evicting it from the `max_open` cache).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import itertools
import os
from collections import OrderedDict
from collections.abc import Callable, Collection
from pathlib import Path

from ovis.block._device import BlockError, Buffer, block_error_from_os
from ovis.nbd._constants import Errno

from ._format import FLAG_DIRTY, SUB_BLOCK
from ._interface import (
    ChecksumError,
    ObjectNotFound,
    ObjectStat,
    ObjectStore,
    StaleVersion,
    StoreClosed,
    check_oid,
    check_range,
    check_version,
)
from ._keyed_lock import KeyedLock
from ._object_file import ObjectFile, bytes_view, read_version, write_new_object


class StoreInUse(BlockError):
    """Another process holds the store's data directory."""


class LocalObjectStore(ObjectStore):
    """Objects as sparse files in `data_dir`, checksummed per 64 KiB sub-block.

    `fsync=False` skips every fdatasync (for tests and scratch stores): the
    store then survives a process crash but not a host crash.  `max_open`
    bounds the open file descriptors and in-memory headers.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str], *, fsync: bool = True, max_open: int = 256
    ) -> None:
        self._dir = Path(data_dir) / "obj"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(Path(data_dir) / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreInUse(Errno.EIO, f"{data_dir} is in use by another process") from None
        self._dir_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for leftover in self._dir.glob("*.tmp"):  # creations a crash interrupted
            leftover.unlink()
        self._fsync = fsync
        self._max_open = max_open
        self._open: OrderedDict[int, ObjectFile] = OrderedDict()
        self._locks = KeyedLock()
        self._tmp_serial = itertools.count()
        self._dir_dirty = False
        self._closed = False

    # -- the ObjectStore operations -----------------------------------------

    async def read(self, oid: int, offset: int, length: int) -> Buffer:
        check_oid(oid)
        check_range(offset, length)
        obj = await self._pin(oid)
        try:
            return obj.read(offset, length)
        except OSError as exc:
            raise block_error_from_os(exc) from exc
        finally:
            self._unpin(obj)

    async def write(self, oid: int, offset: int, data: Buffer, version: int) -> None:
        view = bytes_view(data)
        check_oid(oid)
        check_range(offset, len(view))
        check_version(version)
        async with self._locks.hold(oid):
            obj = await self._pin(oid)
            try:
                if version < obj.header.version:
                    raise StaleVersion(oid, version, obj.header.version)
                if not obj.marked:
                    await self._write_header(obj, obj.header.flags | FLAG_DIRTY)
                    obj.marked = True
                obj.write(offset, view, version)
            except OSError as exc:
                raise block_error_from_os(exc) from exc
            finally:
                self._unpin(obj)

    async def create_and_write(self, oid: int, data: Buffer, version: int) -> None:
        view = bytes_view(data)
        check_oid(oid)
        check_range(0, len(view))
        check_version(version)
        async with self._locks.hold(oid):
            current = await self._version_if_any(oid)
            if current is not None and version < current:
                raise StaleVersion(oid, version, current)
            tmp = self._dir / f"{oid:016x}.{next(self._tmp_serial)}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                try:
                    write_new_object(fd, view, version)
                    await self._fdatasync(fd)  # so that the rename publishes whole data
                finally:
                    os.close(fd)
                os.rename(tmp, self._path(oid))
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                if isinstance(exc, OSError):
                    raise block_error_from_os(exc) from exc
                raise
            await self._retire(oid)
            self._dir_dirty = True

    async def remove(self, oid: int) -> None:
        check_oid(oid)
        self._check_open()
        async with self._locks.hold(oid):
            await self._retire(oid)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(oid))
            self._dir_dirty = True

    async def stat(self, oid: int) -> ObjectStat:
        check_oid(oid)
        obj = await self._pin(oid)
        self._unpin(obj)
        return ObjectStat(obj.header.version, obj.header.length)

    async def list(self) -> list[int]:
        self._check_open()
        try:
            names = os.listdir(self._dir)
        except OSError as exc:
            raise block_error_from_os(exc) from exc
        return sorted(int(name, 16) for name in names if len(name) == 16)

    async def sync(self, oids: Collection[int] | None = None) -> None:
        self._check_open()
        wanted = None if oids is None else set(oids)
        while closing := [
            obj.closing
            for oid, obj in self._open.items()
            if obj.closing is not None and (wanted is None or oid in wanted)
        ]:
            await closing[0].wait()  # eviction is making it durable
        objs = [
            obj
            for oid, obj in self._open.items()
            if obj.unsynced and (wanted is None or oid in wanted)
        ]
        for obj in objs:
            obj.pins += 1
        try:
            results = await asyncio.gather(
                *(self._sync_one(obj) for obj in objs), return_exceptions=True
            )
        finally:
            for obj in objs:
                self._unpin(obj)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if self._dir_dirty:
            self._dir_dirty = False
            try:
                await self._fdatasync(self._dir_fd, os.fsync)
            except BaseException:
                self._dir_dirty = True
                raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        first_error: BaseException | None = None
        try:
            for obj in list(self._open.values()):
                try:
                    if obj.closing is not None:
                        await obj.closing.wait()
                    else:
                        await self._clean(obj)
                except Exception as exc:
                    first_error = first_error or exc
                finally:
                    if obj.closing is None:
                        obj.close()
            self._open.clear()
            if self._dir_dirty and self._fsync:
                os.fsync(self._dir_fd)
        finally:
            os.close(self._dir_fd)
            os.close(self._lock_fd)  # releases the flock
        if first_error is not None:
            raise first_error

    def _abandon(self) -> None:
        """Test hook: let go of everything as a killed process would, writing nothing."""
        self._closed = True
        for obj in self._open.values():
            obj.close()
        self._open.clear()
        os.close(self._dir_fd)
        os.close(self._lock_fd)

    # -- beyond the ObjectStore contract: what a replica service needs ------------

    async def read_object(self, oid: int) -> tuple[int, memoryview]:
        """Return the object's version and its `length` bytes, consistent with each other.

        Both come from one open file with no await in between, so no mutation
        lands between them.  Raises ObjectNotFound, ChecksumError.
        """
        check_oid(oid)
        obj = await self._pin(oid)
        try:
            return obj.header.version, obj.read(0, obj.header.length)
        except OSError as exc:
            raise block_error_from_os(exc) from exc
        finally:
            self._unpin(obj)

    async def checksums(self, oid: int) -> tuple[int, int, builtins.list[int]]:
        """Return (version, length, CRC32 of each 64 KiB sub-block up to `length`).

        Taken from the header in memory, without reading the data, so they are
        consistent with each other.  A sub-block is CRCed zero-padded to 64 KiB,
        so two copies with the same bytes have the same list.  Raises
        ObjectNotFound, ChecksumError (an unreadable header).
        """
        check_oid(oid)
        obj = await self._pin(oid)
        self._unpin(obj)
        header = obj.header
        used = (header.length + SUB_BLOCK - 1) // SUB_BLOCK
        return header.version, header.length, header.crcs[:used].tolist()

    async def versions(self) -> builtins.list[tuple[int, int]]:
        """Return every (oid, version) in the store, sorted by oid: complete or it fails.

        Headers are read from open objects in memory and from the others'
        files, without opening them into the cache (so listing a large store
        neither evicts nor syncs anything).  An object removed meanwhile is
        left out; one whose header is unreadable is listed with version 0,
        older than any real copy.  Raises BlockError if the directory or a
        file cannot be read.
        """
        found: builtins.list[tuple[int, int]] = []
        for n, oid in enumerate(await self.list()):
            self._check_open()
            obj = self._open.get(oid)
            if obj is not None:  # its header in memory is newer than the file's
                found.append((oid, obj.header.version))
            else:
                try:
                    version = read_version(self._path(oid), oid)
                except ObjectNotFound:
                    continue
                except ChecksumError:
                    version = 0
                except OSError as exc:
                    raise block_error_from_os(exc) from exc
                found.append((oid, version))
            if n % 256 == 255:
                await asyncio.sleep(0)  # a big store: let requests through meanwhile
        return found

    # -- the cache of open objects ----------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed()

    def _path(self, oid: int) -> Path:
        return self._dir / f"{oid:016x}"

    async def _pin(self, oid: int) -> ObjectFile:
        self._check_open()
        while (obj := self._open.get(oid)) is not None and obj.closing is not None:
            await obj.closing.wait()
        if obj is None:
            try:
                obj = ObjectFile.open(self._path(oid), oid)
            except OSError as exc:
                raise block_error_from_os(exc) from exc
            self._open[oid] = obj
        self._open.move_to_end(oid)
        obj.pins += 1
        if len(self._open) > self._max_open:
            await self._evict_one()
        return obj

    def _unpin(self, obj: ObjectFile) -> None:
        obj.pins -= 1
        if obj.retired and obj.pins == 0:
            obj.close()

    async def _evict_one(self) -> None:
        obj = next((o for o in self._open.values() if o.pins == 0 and o.closing is None), None)
        if obj is None:
            return  # everything is busy: run over the limit for a moment
        obj.closing = asyncio.Event()
        try:
            await self._clean(obj)
        finally:
            obj.close()
            if self._open.get(obj.oid) is obj:
                del self._open[obj.oid]
            obj.closing.set()

    async def _retire(self, oid: int) -> None:
        """Forget the open file of an object being replaced or removed."""
        while (obj := self._open.get(oid)) is not None and obj.closing is not None:
            await obj.closing.wait()
        obj = self._open.pop(oid, None)
        if obj is not None:
            obj.retired = True
            if obj.pins == 0:
                obj.close()

    async def _version_if_any(self, oid: int) -> int | None:
        try:
            obj = await self._pin(oid)
        except (ObjectNotFound, ChecksumError):
            return None  # a corrupt object may be replaced whatever its version
        self._unpin(obj)
        return obj.header.version

    # -- durability -------------------------------------------------------------

    async def _write_header(self, obj: ObjectFile, flags: int) -> None:
        obj.write_header(flags)
        await self._fdatasync(obj.fd)

    async def _sync_one(self, obj: ObjectFile) -> None:
        obj.unsynced = False
        try:
            await self._write_header(obj, obj.header.flags)
        except BaseException:
            obj.unsynced = True
            raise

    async def _clean(self, obj: ObjectFile) -> None:
        """Make data and CRCs durable, then clear DIRTY: the order keeps CRCs honest."""
        if obj.unsynced:
            await self._sync_one(obj)
        if obj.marked:
            await self._write_header(obj, obj.header.flags & ~FLAG_DIRTY)
            obj.marked = False

    async def _fdatasync(self, fd: int, how: Callable[[int], None] = os.fdatasync) -> None:
        if self._fsync:
            await asyncio.to_thread(how, fd)
