"""SqliteCoordinator: the embedded single-node Coordinator, one WAL-mode SQLite file.

Every write runs in `BEGIN IMMEDIATE`, takes the next value of one global
revision counter and appends to a change log that watches read from; the log
keeps the last `history` revisions.  Session deadlines use CLOCK_BOOTTIME
(immune to wall-clock jumps, running while suspended) and are tagged with the
kernel boot id, so every session dies with a reboot.  Expired sessions are
reaped, with their keys, before any read or write and by every watch poll.
Several processes may share the file; a watch sees another process's writes
within `poll_interval`.  Calls are synchronous sqlite3 (about 0.1 ms each).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

from ._interface import (
    Compacted,
    CompareFailed,
    Coordinator,
    CoordinatorClosed,
    KeyValue,
    Session,
    SessionLost,
    Unavailable,
    WatchEvent,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,
    create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, session INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS kv_session ON kv (session) WHERE session != 0;
CREATE TABLE IF NOT EXISTS sessions (id INTEGER PRIMARY KEY AUTOINCREMENT,
    ttl INTEGER NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS log (rev INTEGER PRIMARY KEY, key TEXT NOT NULL,
    value BLOB NOT NULL, deleted INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 1), ('compact', 1), ('boot_id', '');
"""


def _now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class SqliteCoordinator(Coordinator):
    """A Coordinator over one SQLite file at `path`; no extra process."""

    def __init__(
        self, path: str | Path, *, history: int = 10_000, poll_interval: float = 0.05
    ) -> None:
        if history < 1:
            raise ValueError("history must be >= 1")
        self._history = history
        self._path = path
        self._poll = poll_interval
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(path), isolation_level=None, timeout=10, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._sessions: dict[int, Session] = {}
        self._changed = asyncio.Event()
        with self._write() as db:
            boot = _boot_id()
            (old,) = db.execute("SELECT value FROM meta WHERE name='boot_id'").fetchone()
            if old != boot:  # after a reboot no session can still be alive
                db.execute("UPDATE sessions SET expires = -1")
                db.execute("UPDATE meta SET value=? WHERE name='boot_id'", (boot,))

    # -- plumbing ------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise CoordinatorClosed("SqliteCoordinator is closed")
        return self._db

    def _begin(self, db: sqlite3.Connection, statement: str) -> None:
        try:
            db.execute(statement)
        except sqlite3.OperationalError as exc:  # locked past the busy timeout, disk gone
            raise Unavailable(f"SQLite coordinator {self._path}: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        self._begin(db, "BEGIN IMMEDIATE")
        try:
            self._reap(db)
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._changed.set()

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        if db.execute("SELECT 1 FROM sessions WHERE expires < ? LIMIT 1", (_now(),)).fetchone():
            with self._write():
                pass
        self._begin(db, "BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def _bump(self, db: sqlite3.Connection) -> int:
        (rev,) = db.execute(
            "UPDATE meta SET value = value + 1 WHERE name='revision' RETURNING value"
        ).fetchone()
        return int(rev)

    def _log(self, db: sqlite3.Connection, rev: int, key: str, value: bytes, deleted: bool) -> None:
        db.execute("INSERT INTO log VALUES (?, ?, ?, ?)", (rev, key, value, int(deleted)))
        if rev % 64 == 0:  # trim now and then, not on every write
            self._trim(db, rev - self._history + 1)

    def _trim(self, db: sqlite3.Connection, keep_from: int) -> None:
        (compact,) = db.execute("SELECT value FROM meta WHERE name='compact'").fetchone()
        if keep_from > compact:
            db.execute("DELETE FROM log WHERE rev < ?", (keep_from,))
            db.execute("UPDATE meta SET value=? WHERE name='compact'", (keep_from,))

    def _delete(self, db: sqlite3.Connection, key: str) -> int:
        rev = self._bump(db)
        db.execute("DELETE FROM kv WHERE key=?", (key,))
        self._log(db, rev, key, b"", True)
        return rev

    def _reap(self, db: sqlite3.Connection) -> None:
        expired = [
            sid for (sid,) in db.execute("SELECT id FROM sessions WHERE expires < ?", (_now(),))
        ]
        for sid in expired:
            self._end_session(db, sid)

    def _end_session(self, db: sqlite3.Connection, sid: int) -> None:
        keys = db.execute("SELECT key FROM kv WHERE session=? ORDER BY key", (sid,)).fetchall()
        for (key,) in keys:
            self._delete(db, key)
        db.execute("DELETE FROM sessions WHERE id=?", (sid,))
        session = self._sessions.pop(sid, None)
        if session is not None:
            session.lost.set()
            session._stop_keepalive()

    def _check_session(self, db: sqlite3.Connection, session: Session | None) -> int:
        if session is None:
            return 0
        if db.execute("SELECT 1 FROM sessions WHERE id=?", (session.id,)).fetchone() is None:
            raise SessionLost(f"session {session.id} has expired or was revoked")
        return session.id

    def _store(self, db: sqlite3.Connection, key: str, value: bytes, sid: int) -> int:
        rev = self._bump(db)
        db.execute(
            "INSERT INTO kv VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            " value=excluded.value, mod_rev=excluded.mod_rev, session=excluded.session",
            (key, value, rev, rev, sid),
        )
        self._log(db, rev, key, value, False)
        return rev

    @staticmethod
    def _mod_rev(db: sqlite3.Connection, key: str) -> int:
        row = db.execute("SELECT mod_rev FROM kv WHERE key=?", (key,)).fetchone()
        return 0 if row is None else int(row[0])

    # -- sessions ------------------------------------------------------------

    async def _grant(self, ttl: int) -> int:
        with self._write() as db:
            (sid,) = db.execute(
                "INSERT INTO sessions (ttl, expires) VALUES (?, ?) RETURNING id",
                (ttl, _now() + ttl),
            ).fetchone()
        return int(sid)

    async def _renew(self, session_id: int, ttl: int) -> bool:
        # The reap in _write runs first, so an expired session is not revived.
        with self._write() as db:
            return bool(
                db.execute(
                    "UPDATE sessions SET expires=? WHERE id=?", (_now() + ttl, session_id)
                ).rowcount
            )

    async def close_session(self, session: Session, *, revoke: bool = True) -> None:
        session._stop_keepalive()
        self._sessions.pop(session.id, None)
        if revoke and self._db is not None:
            with self._write() as db:
                self._end_session(db, session.id)
            session.lost.set()

    # -- keys ----------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM kv WHERE key=?", (key,)).fetchone()
        return None if row is None else KeyValue(*row)

    async def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM kv WHERE key >= ? AND substr(key, 1, ?) = ? ORDER BY key",
                (prefix, len(prefix), prefix),
            ).fetchall()
            (rev,) = db.execute("SELECT value FROM meta WHERE name='revision'").fetchone()
        return [KeyValue(*row) for row in rows], int(rev)

    async def put(self, key: str, value: bytes, *, session: Session | None = None) -> int:
        with self._write() as db:
            return self._store(db, key, bytes(value), self._check_session(db, session))

    async def put_if(
        self, key: str, value: bytes, expected_revision: int, *, session: Session | None = None
    ) -> int:
        with self._write() as db:
            sid = self._check_session(db, session)
            actual = self._mod_rev(db, key)
            if actual != expected_revision:
                raise CompareFailed(key, expected_revision, actual)
            return self._store(db, key, bytes(value), sid)

    async def delete_if(self, key: str, expected_revision: int) -> int:
        if expected_revision <= 0:
            raise ValueError("delete_if needs the revision of an existing key (> 0)")
        with self._write() as db:
            actual = self._mod_rev(db, key)
            if actual != expected_revision:
                raise CompareFailed(key, expected_revision, actual)
            return self._delete(db, key)

    async def compact(self, revision: int) -> None:
        with self._write() as db:
            (current,) = db.execute("SELECT value FROM meta WHERE name='revision'").fetchone()
            self._trim(db, min(revision, int(current)))

    # -- watches -------------------------------------------------------------

    async def watch(self, prefix: str, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        next_rev = max(from_revision, 1)
        while True:
            with self._read() as db:
                (compact,) = db.execute("SELECT value FROM meta WHERE name='compact'").fetchone()
                if next_rev < compact:
                    raise Compacted(next_rev, int(compact))
                rows = db.execute(
                    "SELECT rev, key, value, deleted FROM log WHERE rev >= ?"
                    " AND key >= ? AND substr(key, 1, ?) = ? ORDER BY rev LIMIT 1000",
                    (next_rev, prefix, len(prefix), prefix),
                ).fetchall()
                (head,) = db.execute("SELECT value FROM meta WHERE name='revision'").fetchone()
            for rev, key, value, deleted in rows:
                yield WatchEvent("delete" if deleted else "put", key, value, rev)
                next_rev = rev + 1
            if len(rows) < 1000:
                next_rev = max(next_rev, int(head) + 1)
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self._poll)

    # -- lifetime ------------------------------------------------------------

    async def aclose(self) -> None:
        if self._db is None:
            return
        for session in list(self._sessions.values()):
            with contextlib.suppress(sqlite3.Error):
                await self.close_session(session)
        self._db.close()
        self._db = None
