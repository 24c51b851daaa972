"""VolumeCatalog: which vid a name (and snapshot tag) means, in SQLite.

The catalog is the commit point of every management operation: an inode is
written and synced first, then one catalog transaction makes it (or its
removal) official.  A crash before the transaction leaves only an
unreferenced inode, which `VolumeLibrary.gc` removes.

The catalog is authoritative for naming (name, tag, snapshot or working);
the copies of those fields inside an inode describe it for people and repair
tools, and the library corrects them on load.  A cluster will keep the same
few rows in the Coordinator (etcd); the methods here are the whole interface.

vids come from a counter and are never reused, so an object leaked by a
crash can never be mistaken for part of a later volume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
from collections.abc import Iterable, Iterator

from ._errors import VolumeError, VolumeExists
from ._oid import MAX_VID

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


class VolumeCatalog:
    """The names of volumes and snapshots, durable once each call returns.

    Calls are synchronous and short; the caller serialises them (the
    library holds one lock for every management operation) and may run them
    in a worker thread.  `fsync=False` gives up durability across a host
    crash (not a process crash), for tests and scratch libraries.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
            self._db.executescript(_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def lookup(self, name: str, tag: str = "") -> CatalogEntry | None:
        row = self._db.execute(
            "SELECT vid, name, tag FROM volumes WHERE name = ? AND tag = ?", (name, tag)
        ).fetchone()
        return CatalogEntry(*row) if row else None

    def get(self, vid: int) -> CatalogEntry | None:
        row = self._db.execute(
            "SELECT vid, name, tag FROM volumes WHERE vid = ?", (vid,)
        ).fetchone()
        return CatalogEntry(*row) if row else None

    def entries(self, name: str | None = None) -> list[CatalogEntry]:
        """Every entry (or those of one name), by name, then working volume, then vid."""
        where, args = ("WHERE name = ?", (name,)) if name is not None else ("", ())
        rows = self._db.execute(
            f"SELECT vid, name, tag FROM volumes {where} ORDER BY name, tag != '', vid", args
        ).fetchall()
        return [CatalogEntry(*row) for row in rows]

    def allocate_vid(self) -> int:
        """Take the next vid for good (a crash after this only wastes it)."""
        with self._transaction():
            (vid,) = self._db.execute("SELECT value FROM meta WHERE key = 'next_vid'").fetchone()
            if vid > MAX_VID:
                raise VolumeError(f"all {MAX_VID} volume ids have been used")
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_vid'", (vid + 1,))
        return int(vid)

    def commit(self, *, put: Iterable[CatalogEntry] = (), delete: Iterable[int] = ()) -> None:
        """Atomically remove the `delete` vids and add or replace the `put` entries.

        Raises VolumeExists if a name@tag would be taken twice.
        """
        put = list(put)
        with self._transaction():
            for vid in [*delete, *(entry.vid for entry in put)]:
                self._db.execute("DELETE FROM volumes WHERE vid = ?", (vid,))
            for entry in put:
                try:
                    self._db.execute(
                        "INSERT INTO volumes VALUES (?, ?, ?)", (entry.vid, entry.name, entry.tag)
                    )
                except sqlite3.IntegrityError:
                    raise VolumeExists(f"{entry.spec!r} already exists") from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
