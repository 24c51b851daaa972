"""The Coordinator interface: its docstrings are the contract, failures included.

Exceptions (every one is a `CoordinatorError`)::

    CoordinatorError
    ├── Unavailable        no quorum, or no member reachable before the deadline:
    │   │                  the request was not served (a write was not applied)
    │   └── OutcomeUnknown a write was sent but its reply was lost: it may or may
    │                      not have been applied; re-read before retrying
    ├── CompareFailed      put_if / delete_if found another revision
    ├── Compacted          a watch asked for history that has been discarded
    ├── SessionLost        the session's lease is gone (expired or revoked)
    └── CoordinatorClosed  the coordinator was closed

Revisions come from one counter per store that every write increases, so a
key's `mod_revision` names one write, and tokens handed out by `acquire` strictly
increase across holders: they are fencing tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal, Self


class CoordinatorError(Exception):
    """Base class of every error raised by a Coordinator."""


class Unavailable(CoordinatorError):
    """No member could serve the request before the deadline (no quorum, all down)."""


class OutcomeUnknown(Unavailable):
    """A write was sent but no reply came: it may or may not have been applied."""


class CompareFailed(CoordinatorError):
    """A conditional write found `actual_revision` (0: absent), not the expected one."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"{key!r}: expected revision {expected}, found {actual}")
        self.key = key
        self.expected_revision = expected
        self.actual_revision = actual


class Compacted(CoordinatorError):
    """A watch started before `compact_revision`, whose history is gone: re-list."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(
            f"revision {requested} is compacted (history starts at {compact_revision}); "
            "list again and watch from the listed revision + 1"
        )
        self.requested_revision = requested
        self.compact_revision = compact_revision


class SessionLost(CoordinatorError):
    """The session's lease no longer exists: open a new session and re-register."""


class CoordinatorClosed(CoordinatorError):
    """The Coordinator was closed."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key as stored: `session` is the owning session id, or 0 if not ephemeral."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    session: int = 0


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change: a put (value set) or a delete (value empty), at `revision`."""

    kind: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int


class Session:
    """A lease kept alive in the background; keys written with it are ephemeral.

    `lost` is set once the store says the lease is gone: its keys are deleted and
    the owner must open a new session.  `alive()` is False once no keepalive has
    succeeded for a whole TTL, even if `lost` is not set yet (the store may be
    unreachable): a holder must then stop exclusive work.
    """

    def __init__(self, session_id: int, ttl: int) -> None:
        self.id = session_id
        self.ttl = ttl
        self.lost = asyncio.Event()
        self._deadline = time.monotonic() + ttl
        self._keepalive: asyncio.Task[None] | None = None

    def alive(self) -> bool:
        return not self.lost.is_set() and time.monotonic() < self._deadline

    def _renewed(self, at: float, ttl: int) -> None:
        self._deadline = at + ttl

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    def __repr__(self) -> str:
        return f"Session(id={self.id}, ttl={self.ttl}, alive={self.alive()})"


class Coordinator(ABC):
    """Keys, revisions, sessions, watches and fencing locks (SQLite or etcd).

    Keys are str, values bytes.  Every method may raise `Unavailable` when the
    store cannot answer before the implementation's deadline, and
    `CoordinatorClosed` after `aclose`.  Reads are linearizable.
    """

    _sessions: dict[int, Session]  # open sessions by id; implementations create it

    async def open_session(self, ttl: int) -> Session:
        """Grant a lease of `ttl` seconds (>= 1) and keep it alive until closed.

        If renewal stops (process killed or paused, store unreachable for a TTL)
        the store deletes every key written with this session.
        """
        if ttl < 1:
            raise ValueError("ttl must be >= 1 second")
        session = Session(await self._grant(ttl), ttl)
        self._sessions[session.id] = session
        session._keepalive = asyncio.create_task(self._keep_alive(session))
        return session

    async def _keep_alive(self, session: Session) -> None:
        while True:
            await asyncio.sleep(session.ttl / 3)
            sent = time.monotonic()
            try:
                renewed = await self._renew(session.id, session.ttl)
            except CoordinatorClosed:
                return
            except CoordinatorError:
                continue  # unreachable: session.alive() turns False at its deadline
            if not renewed:  # the store no longer knows it: its keys are gone
                self._sessions.pop(session.id, None)
                session.lost.set()
                return
            session._renewed(sent, session.ttl)

    @abstractmethod
    async def _grant(self, ttl: int) -> int:
        """Create a session of `ttl` seconds in the store and return its id."""

    @abstractmethod
    async def _renew(self, session_id: int, ttl: int) -> bool:
        """Extend the session by `ttl` seconds; False if the store no longer knows it."""

    @abstractmethod
    async def close_session(self, session: Session, *, revoke: bool = True) -> None:
        """Stop the keepalive; with `revoke`, delete the session's keys now.

        Without `revoke` the session simply expires after its TTL, as if the
        process had died.  Idempotent; revoking a lost session is not an error.
        """

    @abstractmethod
    async def get(self, key: str) -> KeyValue | None:
        """Return the key with its revisions, or None if absent."""

    @abstractmethod
    async def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Return every key under `prefix` (sorted) and the store revision of that snapshot.

        Watch from the returned revision + 1 to miss nothing after the snapshot.
        """

    @abstractmethod
    async def put(self, key: str, value: bytes, *, session: Session | None = None) -> int:
        """Set the key unconditionally and return the new revision.

        Raises SessionLost if `session` is gone; OutcomeUnknown if the reply was lost.
        """

    @abstractmethod
    async def put_if(
        self, key: str, value: bytes, expected_revision: int, *, session: Session | None = None
    ) -> int:
        """Set the key only if its mod_revision is `expected_revision` (0: absent).

        Return the new revision.  Raises CompareFailed (carrying the actual
        revision) if another write came first, SessionLost if `session` is gone,
        and OutcomeUnknown if the reply was lost (re-read the key: if it carries
        your value and session, your write won).
        """

    @abstractmethod
    async def delete_if(self, key: str, expected_revision: int) -> int:
        """Delete the key only if its mod_revision is `expected_revision` (> 0).

        Return the revision of the delete.  Raises CompareFailed if the key is
        absent or was written since, ValueError if `expected_revision` <= 0.
        """

    @abstractmethod
    def watch(self, prefix: str, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        """Yield every change under `prefix` at revision >= `from_revision`, in order.

        Runs until closed (use `contextlib.aclosing`).  No event is missed or
        repeated, even if the implementation reconnects underneath.  Raises
        Compacted if `from_revision` is older than the kept history, and
        Unavailable if the store stays unreachable past the deadline (watch
        again from the last revision seen + 1).
        """

    @abstractmethod
    async def compact(self, revision: int) -> None:
        """Discard history before `revision`; watches from older revisions get Compacted."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop every keepalive, revoke open sessions (best effort), release resources.

        Closes even if the store is unreachable.  Idempotent.
        """

    # Recipes on top of the primitives, shared by every implementation.

    async def try_acquire(self, name: str, session: Session, owner: bytes = b"") -> int | None:
        """Take the lock `name` for `session` if free; return its fencing token or None.

        The token is the revision of the write that took the lock, so it is
        greater than any token handed out before.  The lock is released by
        `release`, or when the session ends.  Storage must reject requests
        carrying a token lower than the highest it has seen.  Not re-entrant:
        a session that already holds `name` gets None.
        """
        try:
            return await self.put_if(name, owner, 0, session=session)
        except CompareFailed:
            return None
        except OutcomeUnknown:
            held = await self.get(name)
            if held is not None and held.session == session.id and held.value == owner:
                return held.mod_revision
            return None

    async def acquire(
        self, name: str, session: Session, owner: bytes = b"", timeout: float | None = None
    ) -> int:
        """Wait until the lock `name` is free, take it, and return its fencing token.

        Raises TimeoutError after `timeout` seconds, SessionLost if the session ends.
        """
        async with asyncio.timeout(timeout):
            while True:
                if session.lost.is_set():
                    raise SessionLost(f"session {session.id} ended while acquiring {name!r}")
                token = await self.try_acquire(name, session, owner)
                if token is not None:
                    return token
                current = await self.get(name)
                if current is not None:
                    waiting = asyncio.ensure_future(self._deleted(name, current.mod_revision))
                    lost = asyncio.ensure_future(session.lost.wait())
                    try:
                        await asyncio.wait([waiting, lost], return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for task in (waiting, lost):
                            task.cancel()
                        await asyncio.gather(waiting, lost, return_exceptions=True)
                    if waiting.done() and not waiting.cancelled():
                        waiting.result()  # re-raise Unavailable and the like

    async def _deleted(self, name: str, revision: int) -> None:
        """Return once `name`, as written at `revision`, may have been deleted."""
        events = self.watch(name, revision + 1)
        with contextlib.suppress(Compacted):  # history gone: let the caller look again
            async with contextlib.aclosing(events):
                async for event in events:
                    if event.key == name and event.kind == "delete":
                        return

    async def release(self, name: str, token: int) -> bool:
        """Release the lock if `token` still holds it; False if it was already lost."""
        try:
            await self.delete_if(name, token)
        except CompareFailed:
            return False
        return True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
