"""The volume catalog: which vid a name (and snapshot tag) means.

The catalog is the commit point of every management operation: an inode is
written and synced first, then one atomic `commit` makes it (or its removal)
official.  A crash before the commit leaves only an unreferenced inode, which
`VolumeLibrary.gc` removes.

The catalog is authoritative for naming (name, tag, snapshot or working);
the copies of those fields inside an inode describe it for people and repair
tools, and the library corrects them on load.

`Catalog` is the interface, async because a cluster keeps the catalog in the
Coordinator (etcd), whose client runs on the node's event loop:
`SqliteCatalog` (here; one file, one node) and `CoordinatorCatalog`
(ovis.cluster).  `ovis.volume.testing.check_catalog` is the conformance suite
both pass.

vids come from a counter and are never reused, so an object leaked by a
crash can never be mistaken for part of a later volume.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TypeVar

from ._errors import VolumeError, VolumeExists, VolumeIOError
from ._oid import MAX_VID

T = TypeVar("T")


class CatalogUnavailable(VolumeIOError):
    """The catalog's storage (its SQLite file, the Coordinator) could not answer."""


@dataclasses.dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One volume (tag '') or snapshot (tag set) and its vid."""

    vid: int
    name: str
    tag: str = ""

    @property
    def snapshot(self) -> bool:
        return bool(self.tag)

    @property
    def spec(self) -> str:
        """`name` or `name@tag`, as people type it."""
        return f"{self.name}@{self.tag}" if self.tag else self.name


def entry_order(entry: CatalogEntry) -> tuple[str, bool, int]:
    """The order `Catalog.entries` returns: by name, working volume first, then vid."""
    return entry.name, entry.tag != "", entry.vid


class Catalog(abc.ABC):
    """The names of volumes and snapshots, and the vid counter.

    Contract, for every implementation:

    - Each call is atomic, and durable once it returns.  A read reflects
      every commit that returned before it began, from any client of the
      same catalog (another process, another node).
    - Every method raises `CatalogUnavailable` (a VolumeIOError) when the
      storage cannot answer.  If `commit` or `allocate_vid` raises it, the
      change may or may not have been applied: the library treats that as a
      crash at the commit point (one state or the other, leaks for `gc`).
    - After `aclose` every method raises VolumeError.
    - Clients on other nodes may commit at any time; `operation()` is how
      the library keeps them out of a multi-step management operation.
    """

    @abc.abstractmethod
    async def lookup(self, name: str, tag: str = "") -> CatalogEntry | None:
        """The entry named `name` (working volume) or `name@tag`, or None."""

    @abc.abstractmethod
    async def get(self, vid: int) -> CatalogEntry | None:
        """The entry of `vid`, or None."""

    @abc.abstractmethod
    async def entries(self, name: str | None = None) -> list[CatalogEntry]:
        """Every entry (or those of one name), by name, then working volume, then vid."""

    @abc.abstractmethod
    async def allocate_vid(self) -> int:
        """Take the next vid for good: never handed out again, even after a crash.

        Raises VolumeError once every vid up to MAX_VID has been used.
        """

    @abc.abstractmethod
    async def commit(self, *, put: Iterable[CatalogEntry] = (), delete: Iterable[int] = ()) -> None:
        """Atomically remove the `delete` vids and add or replace the `put` entries.

        An entry in `put` replaces whatever entry had its vid.  Raises
        VolumeExists, applying nothing, if a name@tag would be taken twice.
        """

    @abc.abstractmethod
    def operation(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Serialise one management operation against every other client of the catalog.

        The library enters it (inside its own asyncio lock) around each
        operation, so a lookup and the commit that relies on it see no other
        client's change in between.  Raises VolumeError if the turn cannot be
        had (another client kept it too long).  Commits stay atomic without
        it: it guards the steps between them, not the catalog's integrity.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the catalog's resources, even if its storage fails; idempotent."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    vid  INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    tag  TEXT NOT NULL  -- '' for the working volume, else the snapshot's tag
);
CREATE UNIQUE INDEX IF NOT EXISTS volumes_by_name ON volumes (name, tag);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema', 1), ('next_vid', 1);
"""


class SqliteCatalog(Catalog):
    """The single-node catalog: one SQLite file, its calls run in a worker thread.

    SQLite commits wait for the disk, so each call runs in a thread (one at a
    time per catalog) and the event loop keeps serving I/O.  `fsync=False`
    gives up durability across a host crash (not a process crash), for tests
    and scratch libraries.  `operation()` does nothing: one node daemon owns
    a data directory, and the library's own lock already serialises it.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()  # one statement sequence at a time on the connection
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise CatalogUnavailable(f"catalog {self.path}: {exc}") from exc
        self._db: sqlite3.Connection | None = db
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise

    async def _call(self, call: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                if self._db is None:
                    raise VolumeError("the catalog is closed")
                try:
                    return call(self._db)
                except sqlite3.IntegrityError:
                    raise
                except sqlite3.Error as exc:
                    raise CatalogUnavailable(f"catalog {self.path}: {exc}") from exc

        if self._db is None:
            raise VolumeError("the catalog is closed")
        return await asyncio.to_thread(locked)

    async def lookup(self, name: str, tag: str = "") -> CatalogEntry | None:
        def run(db: sqlite3.Connection) -> CatalogEntry | None:
            query = "SELECT vid, name, tag FROM volumes WHERE name = ? AND tag = ?"
            row = db.execute(query, (name, tag)).fetchone()
            return CatalogEntry(*row) if row else None

        return await self._call(run)

    async def get(self, vid: int) -> CatalogEntry | None:
        def run(db: sqlite3.Connection) -> CatalogEntry | None:
            row = db.execute("SELECT vid, name, tag FROM volumes WHERE vid = ?", (vid,)).fetchone()
            return CatalogEntry(*row) if row else None

        return await self._call(run)

    async def entries(self, name: str | None = None) -> list[CatalogEntry]:
        def run(db: sqlite3.Connection) -> list[CatalogEntry]:
            where, args = ("WHERE name = ?", (name,)) if name is not None else ("", ())
            rows = db.execute(f"SELECT vid, name, tag FROM volumes {where}", args).fetchall()
            return sorted((CatalogEntry(*row) for row in rows), key=entry_order)

        return await self._call(run)

    async def allocate_vid(self) -> int:
        def run(db: sqlite3.Connection) -> int:
            with _transaction(db):
                (vid,) = db.execute("SELECT value FROM meta WHERE key = 'next_vid'").fetchone()
                if vid > MAX_VID:
                    raise VolumeError(f"all {MAX_VID} volume ids have been used")
                db.execute("UPDATE meta SET value = ? WHERE key = 'next_vid'", (vid + 1,))
            return int(vid)

        return await self._call(run)

    async def commit(self, *, put: Iterable[CatalogEntry] = (), delete: Iterable[int] = ()) -> None:
        put, delete = list(put), list(delete)

        def run(db: sqlite3.Connection) -> None:
            with _transaction(db):
                for vid in [*delete, *(entry.vid for entry in put)]:
                    db.execute("DELETE FROM volumes WHERE vid = ?", (vid,))
                for entry in put:
                    try:
                        row = (entry.vid, entry.name, entry.tag)
                        db.execute("INSERT INTO volumes VALUES (?, ?, ?)", row)
                    except sqlite3.IntegrityError:
                        raise VolumeExists(f"{entry.spec!r} already exists") from None

        await self._call(run)

    @contextlib.asynccontextmanager
    async def operation(self) -> AsyncIterator[None]:
        if self._db is None:
            raise VolumeError("the catalog is closed")
        yield

    def close(self) -> None:
        """`aclose` for synchronous code: waits for a call still running in its thread."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    async def aclose(self) -> None:
        if self._db is not None:
            await asyncio.to_thread(self.close)


VolumeCatalog = SqliteCatalog  # the name this class had before the catalog became an interface


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
