"""CoordinatorCatalog: a cluster's volume catalog, kept in the Coordinator.

Design note.
- The whole catalog is ONE key, `ovis/catalog`, holding JSON
  `{"next_vid": n, "volumes": [[vid, name, tag], ...], "write": id}`.  Every
  change is read, modify, then `put_if` on the mod_revision just read, retried
  on CompareFailed.  One key makes every commit atomic without multi-key
  transactions, and makes `allocate_vid` a compare-and-swap increment (vids
  are never reused).  Reads `get` the key each time (about 2 ms on etcd), so
  they are never stale.
- `write` is a fresh random id per attempt.  When a put's reply is lost
  (OutcomeUnknown) the next read tells whether our attempt landed: if the
  key carries one of our ids it did.  Every change is safe to redo anyway (a
  commit is idempotent, a redone allocation only wastes a vid).
- Bound: etcd refuses values over 1.5 MiB (its --max-request-bytes), so a
  change that would make the value larger than `max_bytes` (1 MiB) is refused
  with a VolumeError instead.  An entry takes about 20 bytes plus its name
  and tag: some 30,000 volumes and snapshots with 16-character names, 3,800
  with 255-byte names.
- `operation()` takes the Coordinator lock `ovis/locks/catalog` with the
  node's session, so one management operation runs at a time in the whole
  cluster (a lookup and the commit relying on it see no other node's change
  between them; gc sees no half-made volume).  Integrity does not depend on
  it: every commit is still a CAS.
- The session is given as a Session or as a callable returning the node's
  current one: a node opens a new session after losing one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from ovis.coord import (
    CompareFailed,
    Coordinator,
    CoordinatorError,
    OutcomeUnknown,
    Session,
    SessionLost,
)
from ovis.volume._catalog import Catalog, CatalogEntry, CatalogUnavailable, entry_order
from ovis.volume._errors import VolumeError, VolumeExists
from ovis.volume._oid import MAX_VID

log = logging.getLogger(__name__)
T = TypeVar("T")
SessionSource = Session | Callable[[], Session]
MAX_CATALOG_BYTES = 1 << 20  # etcd's default request limit is 1.5 MiB: keep clear of it
LOCK_TIMEOUT = 30.0


@dataclasses.dataclass(slots=True)
class _State:
    next_vid: int
    volumes: dict[int, CatalogEntry]
    write: str = ""

    @classmethod
    def decode(cls, raw: bytes, key: str) -> _State:
        try:
            data = json.loads(raw)
            volumes = {int(v): CatalogEntry(int(v), str(n), str(t)) for v, n, t in data["volumes"]}
            return cls(int(data["next_vid"]), volumes, str(data.get("write", "")))
        except (ValueError, TypeError, KeyError) as exc:
            raise VolumeError(f"the catalog in {key!r} is damaged: {exc}") from exc

    def encode(self) -> bytes:
        rows = [[e.vid, e.name, e.tag] for e in sorted(self.volumes.values(), key=entry_order)]
        data = {"next_vid": self.next_vid, "volumes": rows, "write": self.write}
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def session_source(session: SessionSource) -> Callable[[], Session]:
    """A Session, or a callable giving the current one, as a callable."""
    return (lambda: session) if isinstance(session, Session) else session


class CoordinatorCatalog(Catalog):
    """The Catalog of a cluster: one key in the Coordinator (see the module's note).

    `session` (a Session, or a callable returning the node's current one) is
    used for the management lock only.  `prefix` namespaces the keys, for
    tests and for several clusters in one etcd.  `aclose` does not close the
    Coordinator, which belongs to the caller.  Coordinator failures come out
    as CatalogUnavailable; a lost session as VolumeError.
    """

    def __init__(
        self,
        coord: Coordinator,
        session: SessionSource,
        *,
        prefix: str = "ovis/",
        lock_timeout: float = LOCK_TIMEOUT,
        max_bytes: int = MAX_CATALOG_BYTES,
    ) -> None:
        self._coord = coord
        self._session = session_source(session)
        self.key = f"{prefix}catalog"
        self.lock_key = f"{prefix}locks/catalog"
        self._lock_timeout = lock_timeout
        self._max_bytes = max_bytes
        self._owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
        self._closed = False
        self._maybe_holding = False  # an operation may have left the lock behind
        self._local_turn = asyncio.Lock()  # acquire is not re-entrant within one session

    # -- reads ------------------------------------------------------------------

    async def lookup(self, name: str, tag: str = "") -> CatalogEntry | None:
        state, _ = await self._read()
        return next((e for e in state.volumes.values() if (e.name, e.tag) == (name, tag)), None)

    async def get(self, vid: int) -> CatalogEntry | None:
        state, _ = await self._read()
        return state.volumes.get(vid)

    async def entries(self, name: str | None = None) -> list[CatalogEntry]:
        state, _ = await self._read()
        chosen = (e for e in state.volumes.values() if name is None or e.name == name)
        return sorted(chosen, key=entry_order)

    # -- changes ----------------------------------------------------------------

    async def allocate_vid(self) -> int:
        def take(state: _State) -> int:
            vid = state.next_vid
            if vid > MAX_VID:
                raise VolumeError(f"all {MAX_VID} volume ids have been used")
            state.next_vid = vid + 1
            return vid

        return await self._update(take)

    async def commit(self, *, put: Iterable[CatalogEntry] = (), delete: Iterable[int] = ()) -> None:
        put, delete = list(put), list(delete)

        def apply(state: _State) -> None:
            for vid in [*delete, *(entry.vid for entry in put)]:
                state.volumes.pop(vid, None)
            taken = {(e.name, e.tag) for e in state.volumes.values()}
            for entry in put:
                if (entry.name, entry.tag) in taken:
                    raise VolumeExists(f"{entry.spec!r} already exists")
                taken.add((entry.name, entry.tag))
                state.volumes[entry.vid] = entry

        self._check_open()
        if put or delete:
            await self._update(apply)

    @contextlib.asynccontextmanager
    async def operation(self) -> AsyncIterator[None]:
        self._check_open()
        async with self._local_turn:
            session = self._session()
            token = await self._take_lock(session)
            try:
                yield
            finally:
                await self._give_back(token)

    async def aclose(self) -> None:
        self._closed = True

    # -- plumbing -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise VolumeError("the catalog is closed")

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        """Coordinator errors (but CompareFailed) out as CatalogUnavailable."""
        try:
            return await call
        except (CompareFailed, OutcomeUnknown):
            raise
        except SessionLost as exc:
            raise VolumeError(f"cannot {what}: this node's Coordinator session ended") from exc
        except CoordinatorError as exc:
            raise CatalogUnavailable(f"cannot {what}: the Coordinator: {exc}") from exc

    async def _read(self) -> tuple[_State, int]:
        self._check_open()
        kv = await self._call("read the catalog", self._coord.get(self.key))
        if kv is None:
            return _State(1, {}), 0
        return _State.decode(kv.value, self.key), kv.mod_revision

    async def _update(self, change: Callable[[_State], T]) -> T:
        """Read, change, put_if the read revision; again until it lands (see the note)."""
        attempts: dict[str, T] = {}
        while True:
            state, revision = await self._read()
            if state.write in attempts:  # a put whose reply was lost did land
                return attempts[state.write]
            result = change(state)
            state.write = secrets.token_hex(8)
            value = state.encode()
            if len(value) > self._max_bytes:
                raise VolumeError(
                    f"the catalog is full: {len(value)} bytes would pass the "
                    f"{self._max_bytes}-byte limit of one Coordinator value; "
                    "delete volumes or snapshots first"
                )
            attempts[state.write] = result
            try:
                await self._call(
                    "change the catalog", self._coord.put_if(self.key, value, revision)
                )
            except (CompareFailed, OutcomeUnknown):
                continue
            return result

    async def _take_lock(self, session: Session) -> int:
        if self._maybe_holding:  # a cancelled or failed release: our own turn is stale
            await self._clear_own_lock(session)
        self._maybe_holding = True
        try:
            return await self._call(
                "start a management operation",
                self._coord.acquire(self.lock_key, session, self._owner, self._lock_timeout),
            )
        except TimeoutError:
            holder = await self._holder()
            raise VolumeError(
                f"another node{holder} is running a management operation; try again"
            ) from None
        except OutcomeUnknown as exc:
            raise CatalogUnavailable(f"cannot start a management operation: {exc}") from exc

    async def _give_back(self, token: int) -> None:
        try:
            await self._coord.release(self.lock_key, token)
        except CoordinatorError as exc:  # the next operation (or the session's end) frees it
            log.warning("catalog lock not released yet: %s", exc)
        else:
            self._maybe_holding = False

    async def _clear_own_lock(self, session: Session) -> None:
        kv = await self._call("read the catalog lock", self._coord.get(self.lock_key))
        if kv is not None and kv.session == session.id:
            await self._call("free the catalog lock", self._coord.release(kv.key, kv.mod_revision))

    async def _holder(self) -> str:
        """' (host:pid)' of the lock's holder, if it can be read."""
        with contextlib.suppress(CoordinatorError, ValueError, KeyError, TypeError):
            kv = await self._coord.get(self.lock_key)
            if kv is not None:
                owner: dict[str, Any] = json.loads(kv.value)
                return f" ({owner['host']}, pid {owner['pid']})"
        return ""
