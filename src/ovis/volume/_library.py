"""VolumeLibrary: thin volumes with instant snapshots and clones, on one node.

Design note.
- Model (Sheepdog's): a volume is an inode plus data objects in an
  ObjectStore.  The inode's owner array says, per object index, which vid's
  object holds the bytes (0: never written, reads as zeros).  Object ids are
  a pure function of (kind, vid, index): see _oid.py.
- Snapshot: the working volume's inode is frozen as the snapshot, and the
  name continues on a new vid whose inode copies the owner array.  Clone:
  a new name whose inode copies a snapshot's array.  Rollback: the name
  continues on a new vid copied from one of its snapshots, and the old
  working vid is deleted.  All three copy metadata only; data is copied on
  the first write to each shared object (ObjectVolume).
- Ordering, the one rule everything follows: data before the metadata that
  names it, and metadata change before the removal of data it stops naming.
  Each operation writes and syncs the new inodes, then makes one atomic
  catalog commit (the commit point), then removes what is no longer named.
  A crash anywhere leaks objects at worst; `gc()` removes them.
- Versions: each inode write reserves a block of object versions before any
  is used (Inode.reserve_versions), so versions only grow, across crashes too.
- Concurrency: management calls are serialised by one lock, and inside it
  by the catalog's `operation()` against other processes or nodes sharing
  the catalog (a Coordinator lock in a cluster).  A working
  volume has at most one open ObjectVolume, which the serving layer shares
  between connections; snapshots may be open many times.  A snapshot of an
  open volume pauses its I/O briefly and retargets it to the new vid, so
  clients carry on.  Delete, rollback and shrink need the volume closed.
- The store is any ObjectStore: a replicated one plugs in unchanged.  So is
  the catalog: SQLite on one node, the Coordinator (CoordinatorCatalog) in a
  cluster.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from ovis.block._device import BlockError
from ovis.store import LocalObjectStore, ObjectStore

from ._catalog import Catalog, CatalogEntry, SqliteCatalog
from ._errors import (
    DataBeyondSize,
    NotASnapshot,
    SnapshotReadOnly,
    VolumeError,
    VolumeExists,
    VolumeInUse,
    VolumeNotFound,
    store_errors,
)
from ._inode import DEFAULT_OBJECT_SIZE, Inode
from ._inode_store import has_data_beyond, load_inode, write_inode
from ._names import check_name, check_object_size, check_size, parse_spec
from ._object_volume import ObjectVolume
from ._oid import data_oid, inode_oid
from ._open_volumes import OpenVolumes
from ._reclaim import GcReport, collect_garbage, reclaim
from ._reports import ChangedExtent, VolumeInfo, VolumeNode, diff_volumes, volume_info, volume_tree

log = logging.getLogger(__name__)


class VolumeLibrary:
    """Create, snapshot, clone, roll back, resize, delete and open volumes.

    Every method is a coroutine except the constructors; `aclose` (or
    `async with`) flushes and closes open volumes, the store and the catalog.
    """

    def __init__(self, store: ObjectStore, catalog: Catalog) -> None:
        self._store = store
        self._catalog = catalog
        self._lock = asyncio.Lock()
        self._open = OpenVolumes(store)
        self._closed = False

    @classmethod
    def local(cls, data_dir: str | os.PathLike[str], *, fsync: bool = True) -> VolumeLibrary:
        """The single-node library: `objects/` (LocalObjectStore) and `catalog.sqlite`."""
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        catalog = SqliteCatalog(path / "catalog.sqlite", fsync=fsync)
        try:
            return cls(LocalObjectStore(path / "objects", fsync=fsync), catalog)
        except BaseException:
            catalog.close()
            raise

    async def __aenter__(self) -> VolumeLibrary:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Flush and close open volumes, then the store and catalog; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for volume in self._open.writers():
                with contextlib.suppress(BlockError):
                    await volume.aclose()
            await self._store.aclose()
        finally:
            await self._catalog.aclose()

    # -- management operations ----------------------------------------------

    async def create(
        self, name: str, size: int, *, object_size: int = DEFAULT_OBJECT_SIZE
    ) -> VolumeInfo:
        """Create an empty thin volume of `size` bytes (a multiple of 512)."""
        check_name(name)
        check_object_size(object_size)
        check_size(size, object_size)
        async with self._operation(f"create {name!r}"):
            if await self._catalog.lookup(name) is not None:
                raise VolumeExists(f"volume {name!r} already exists")
            vid = await self._catalog.allocate_vid()
            inode = Inode(vid, name, size, object_size, created_ns=time.time_ns())
            await write_inode(self._store, inode)
            entry = CatalogEntry(inode.vid, name)
            await self._catalog.commit(put=[entry])
            return volume_info(entry, inode, 0, False)

    async def open(self, spec: str) -> ObjectVolume:
        """Open `name` (writable, one instance at a time) or `name@tag` (read-only).

        Share the one writable instance between all connections to the
        volume (that is what makes can_multi_conn true); close it with aclose.
        """
        async with self._operation(f"open {spec!r}"):
            entry = await self._resolve(spec)
            inode = await self._load(entry)
            if entry.snapshot:
                return self._open.open_reader(inode)
            if self._open.writer(entry.name) is not None:
                raise VolumeInUse(f"volume {entry.name!r} is already open")
            return self._open.open_writer(inode, await write_inode(self._store, inode) + 1)

    async def snapshot(self, name: str, tag: str) -> VolumeInfo:
        """Freeze volume `name` as `name@tag`; the volume carries on, open or not."""
        parse_spec(f"{name}@{tag}")
        async with self._operation(f"snapshot {name!r}"):
            entry = await self._resolve(name)
            if await self._catalog.lookup(name, tag) is not None:
                raise VolumeExists(f"snapshot {name}@{tag} already exists")
            volume = self._open.writer(name)
            if volume is None:
                return await self._snapshot(entry, tag, None)
            async with volume.exclusive():
                return await self._snapshot(entry, tag, volume)

    async def clone(self, snapshot: str, name: str) -> VolumeInfo:
        """Make a new writable volume `name` sharing every object of `snapshot`."""
        check_name(name)
        async with self._operation(f"clone {snapshot!r}"):
            source = await self._resolve(snapshot)
            if not source.snapshot:
                raise NotASnapshot(f"{snapshot!r} is not a snapshot: clone name@tag")
            if await self._catalog.lookup(name) is not None:
                raise VolumeExists(f"volume {name!r} already exists")
            child = await self._branch(await self._load(source), name)
            entry = CatalogEntry(child.vid, name)
            await self._catalog.commit(put=[entry])
            return volume_info(entry, child, 0, False)

    async def rollback(self, name: str, tag: str) -> VolumeInfo:
        """Make volume `name` hold `name@tag` again, discarding its current state."""
        async with self._operation(f"rollback {name!r}"):
            working = await self._resolve(name)
            target = await self._resolve(f"{name}@{tag}")
            if self._open.writer(name) is not None:
                raise VolumeInUse(f"volume {name!r} is open; close it to roll it back")
            old = await self._load(working)
            child = await self._branch(await self._load(target), name, old.created_ns)
            entry = CatalogEntry(child.vid, name)
            await self._catalog.commit(put=[entry], delete=[working.vid])
            await self._reclaim([old])
            return await self._info(entry)

    async def resize(self, name: str, size: int, *, force: bool = False) -> VolumeInfo:
        """Grow, or shrink (refused if data would be lost, unless `force`)."""
        async with self._operation(f"resize {name!r}"):
            entry = await self._resolve(name)
            if entry.snapshot:
                raise SnapshotReadOnly(f"snapshot {entry.spec} cannot be resized")
            volume = self._open.writer(name)
            inode = volume.inode if volume else await self._load(entry)
            check_size(size, inode.object_size)
            if volume is not None and size < inode.size:
                raise VolumeInUse(f"volume {name!r} is open; close it to shrink it")
            if size < inode.size and not force and await has_data_beyond(self._store, inode, size):
                raise DataBeyondSize(
                    f"volume {name!r} holds data past {size} bytes; force=True drops it"
                )
            if volume is not None:
                async with volume.exclusive():
                    await volume.resize(size)
            elif size < inode.size:
                shrinking = self._open.open_writer(inode, await write_inode(self._store, inode) + 1)
                async with shrinking.exclusive():
                    await shrinking.resize(size)
                await shrinking.aclose()
            else:
                inode.resize(size)
                await write_inode(self._store, inode)
            return await self._info(entry)

    async def delete(self, spec: str) -> None:
        """Delete `name@tag`, or `name` with all its snapshots.

        Objects shared with other volumes (clones of its snapshots) stay.
        """
        async with self._operation(f"delete {spec!r}"):
            name, tag = parse_spec(spec)
            doomed = [await self._resolve(spec)] if tag else await self._catalog.entries(name)
            if not doomed:
                raise VolumeNotFound(f"no volume {name!r}")
            for entry in doomed:
                if self._open.is_open(entry):
                    raise VolumeInUse(f"{entry.spec!r} is open")
            inodes = [await self._load(entry) for entry in doomed]
            await self._catalog.commit(delete=[entry.vid for entry in doomed])
            await self._reclaim(inodes)

    async def gc(self) -> GcReport:
        """Remove every object no volume names: what crashes and interrupted deletes leaked."""
        async with self._operation("gc"):
            live = [await self._load(e) for e in await self._catalog.entries()]
            busy = {volume.inode.vid for volume in self._open.writers()}
            return await collect_garbage(self._store, live, busy)

    # -- reports --------------------------------------------------------------

    async def list(self) -> builtins.list[VolumeInfo]:
        """Every volume and snapshot, by name (working volume first)."""
        async with self._operation("list"):
            entries = await self._catalog.entries()
            return [await self._info(entry, entries) for entry in entries]

    async def info(self, spec: str) -> VolumeInfo:
        """One volume (`name`) or snapshot (`name@tag`)."""
        async with self._operation(f"info {spec!r}"):
            return await self._info(await self._resolve(spec))

    async def tree(self) -> builtins.list[VolumeNode]:
        """Volumes arranged by parent: snapshot chains and the clones branching off them."""
        return volume_tree(await self.list())

    async def objects(self, spec: str) -> builtins.list[int]:
        """The oids `spec` reads from: its inode, then every data object it names (sorted).

        Objects shared with snapshots and clones are included; `ovis vdi check` uses this.
        """
        async with self._operation(f"list objects of {spec!r}"):
            inode = await self._load(await self._resolve(spec))
            named = [data_oid(owner, index) for index, owner in enumerate(inode.owners) if owner]
            return [inode_oid(inode.vid), *sorted(named)]

    async def diff(
        self, old: str, new: str, *, granularity: int | None = None
    ) -> builtins.list[ChangedExtent]:
        """Byte ranges of `new` that may differ from `old` (e.g. name@monday, name).

        Found at object granularity from the owner arrays; with `granularity`
        the differing objects are read and compared in chunks of that size.
        """
        async with self._operation(f"diff {old!r} {new!r}"):
            before = await self._load(await self._resolve(old))
            after = await self._load(await self._resolve(new))
            return await diff_volumes(self._store, before, after, granularity)

    # -- helpers ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _operation(self, what: str) -> AsyncIterator[None]:
        if self._closed:
            raise VolumeError("the volume library is closed")
        async with self._lock, self._catalog.operation():
            with store_errors(f"cannot {what}"):
                yield

    async def _resolve(self, spec: str) -> CatalogEntry:
        name, tag = parse_spec(spec)
        entry = await self._catalog.lookup(name, tag)
        if entry is None:
            raise VolumeNotFound(f"no {'snapshot' if tag else 'volume'} {spec!r}")
        return entry

    async def _load(self, entry: CatalogEntry) -> Inode:
        """The entry's inode: the live one if open for writing, else from the store."""
        live = self._open.live_inode(entry)
        if live is not None:
            return live
        inode = await load_inode(self._store, entry.vid, entry.spec)
        # The catalog is authoritative for naming; see _catalog.py.
        inode.name, inode.tag, inode.snapshot = entry.name, entry.tag, entry.snapshot
        return inode

    async def _branch(self, base: Inode, name: str, created_ns: int | None = None) -> Inode:
        """A new durable inode sharing `base`'s objects (not yet in the catalog)."""
        vid = await self._catalog.allocate_vid()
        child = base.child(vid, name, created_ns or time.time_ns())
        await write_inode(self._store, child)
        return child

    async def _snapshot(
        self, entry: CatalogEntry, tag: str, volume: ObjectVolume | None
    ) -> VolumeInfo:
        if volume is not None:
            await volume.commit()  # the snapshot holds every write acknowledged so far
        base = volume.inode if volume is not None else await self._load(entry)
        vid = await self._catalog.allocate_vid()
        child = base.child(vid, entry.name, base.created_ns)  # the volume is as old as before
        version = await write_inode(self._store, child)
        frozen = CatalogEntry(entry.vid, entry.name, tag)
        await self._catalog.commit(put=[frozen, CatalogEntry(vid, entry.name)])
        if volume is not None:
            volume.retarget(child, version + 1)
        # Record the naming in the frozen inode too; only descriptive, so best effort.
        base.snapshot, base.tag, base.snapshot_ns = True, tag, time.time_ns()
        try:
            await write_inode(self._store, base)
        except BlockError as exc:
            log.warning("snapshot %s: inode not updated (harmless): %s", frozen.spec, exc)
        return await self._info(frozen)

    async def _reclaim(self, gone: builtins.list[Inode]) -> None:
        """Best effort after the commit point: what fails here is a leak for gc()."""
        live = [await self._load(e) for e in await self._catalog.entries()]
        try:
            await reclaim(self._store, gone, live)
        except BlockError as exc:
            log.warning("objects left for gc(): %s", exc)

    async def _info(
        self, entry: CatalogEntry, entries: builtins.list[CatalogEntry] | None = None
    ) -> VolumeInfo:
        if entries is None:
            entries = await self._catalog.entries(entry.name)
        snapshots = sum(1 for e in entries if e.snapshot and e.name == entry.name)
        inode = await self._load(entry)
        return volume_info(entry, inode, snapshots, self._open.is_open(entry))
