"""AttachLeases: one writer per volume (DESIGN.md invariant 3), held in the Coordinator.

Design note.
- Attaching a volume read-write takes the lock `ovis/attach/<name>` with the
  node's session (`try_acquire`, value {"node", "since_ns"}).  Its revision
  is the fencing token: the writer raises the volume's fence on every
  replica to it, and replicas refuse writes carrying an older one.  The key
  is ephemeral, so a node that dies or is cut off loses it after its TTL.
- Per node, attach is idempotent: a second local user shares the
  attachment, and the key goes when the last one detaches.
- Migration (a second writer for a bounded time): `open_migration` writes
  `ovis/migrate/<name>` = {"from", "to", "until_ns"}.  While that window is
  open for (holder -> this node), `attach(name, migrate_from=holder)` takes
  a second lock, `ovis/attach/<name>/incoming`, whose token is higher than
  the holder's.  When the holder's key goes (detach, or its session ends)
  the incoming attachment is promoted: it takes `ovis/attach/<name>` (a new,
  higher token), drops the incoming key and sets `promoted`, so its owner
  raises the fence and the old holder is cut off.  If the window closes
  first, the incoming attachment is revoked (`lost`, with a reason).  While
  an incoming key exists nobody else may take the volume.  Names hold no
  '/', so `<name>/incoming` never collides with a volume's key.
- Watching: one background task per AttachLeases watches `ovis/attach/`
  (events for volumes attached here mark them for a re-check) and wakes
  on session loss, at window deadlines, and every `poll_interval`.  A
  window is re-read when it is due, which also picks up an extension.  An
  attachment is `lost` once its key is gone or not ours, or once the session
  is lost or not `alive()` (then its keys are deleted, retried until done,
  so a session that recovers holds no lease nobody uses).
- Window deadlines are wall-clock (time.time_ns) as they are shared between
  nodes; the destination node, which opens the window, also enforces it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from ovis.coord import CompareFailed, Coordinator, CoordinatorError, OutcomeUnknown, Session
from ovis.volume._errors import InvalidVolumeArgument, VolumeInUse, VolumeIOError
from ovis.volume._names import check_name

from ._attach_model import (
    AttachedElsewhere,
    AttachInfo,
    Attachment,
    MigrationWindow,
    owner_value,
    parse_owner,
    when,
)
from ._catalog import SessionSource, session_source
from ._retry import either

log = logging.getLogger(__name__)
T = TypeVar("T")


class AttachLeases:
    """Attach leases of one node (`node_id`), kept with its session (see the module note).

    `session` is a Session or a callable returning the node's current one.
    Coordinator failures come out of attach, holder, list and open_migration
    as VolumeIOError; detach never raises (a release that fails is retried in
    the background, and the key also ends with the session).
    """

    def __init__(
        self,
        coord: Coordinator,
        session: SessionSource,
        node_id: str,
        *,
        prefix: str = "ovis/",
        poll_interval: float = 0.5,
    ) -> None:
        self._coord = coord
        self._session = session_source(session)
        self.node_id = node_id
        self._attach_prefix = f"{prefix}attach/"
        self._migrate_prefix = f"{prefix}migrate/"
        self._poll = poll_interval
        self._held: dict[str, Attachment] = {}
        self._orphans: set[tuple[str, int]] = set()  # (key, token) of ours still to delete
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def _key(self, name: str) -> str:
        return f"{self._attach_prefix}{name}"

    def _incoming_key(self, name: str) -> str:
        return f"{self._attach_prefix}{name}/incoming"

    def _window_key(self, name: str) -> str:
        return f"{self._migrate_prefix}{name}"

    # -- attaching --------------------------------------------------------------

    async def attach(self, name: str, *, migrate_from: str | None = None) -> Attachment:
        """Hold `name` read-write on this node; the same Attachment if it already does.

        With `migrate_from` (the node holding it now), attach as the second
        writer of an open migration window from that node to this one.
        Raises AttachedElsewhere (one line: who holds it since when, and how
        to proceed) if another node holds it or no suitable window is open.
        """
        check_name(name)
        if self._closed:
            raise VolumeIOError("the attach leases are closed")
        async with self._lock:
            held = self._held.get(name)
            if held is not None:
                held._users += 1
                return held
            session = self._session()
            if not session.alive():
                raise VolumeIOError(f"cannot attach {name!r}: no live Coordinator session")
            if migrate_from is None:
                attachment = await self._call(f"attach {name!r}", self._take(name, session))
            else:
                attachment = await self._call(
                    f"attach {name!r}", self._take_incoming(name, migrate_from, session)
                )
            self._held[name] = attachment
            self._dirty.add(name)  # an incoming one may find the holder already gone
            self._wake.set()
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run())
            return attachment

    async def _take(self, name: str, session: Session) -> Attachment:
        incoming = await self._coord.get(self._incoming_key(name))
        if incoming is not None and (incoming.key, incoming.mod_revision) in self._orphans:
            await self._coord.release(incoming.key, incoming.mod_revision)  # ours, revoked
            self._orphans.discard((incoming.key, incoming.mod_revision))
        elif incoming is not None:
            node, _ = parse_owner(incoming.value)
            raise AttachedElsewhere(
                f"volume {name!r} is being migrated to node {node}; attach it there", name, node
            )
        since = time.time_ns()
        token, holder = await self._acquire(self._key(name), session, since)
        if token is None:
            raise self._elsewhere(name, holder)
        return Attachment(name, self.node_id, token, since, session, self._key(name))

    async def _acquire(self, key: str, session: Session, since: int) -> tuple[int | None, bytes]:
        """Take the lock `key`: (token, b"") or (None, its holder's value)."""
        while True:
            token = await self._coord.try_acquire(key, session, owner_value(self.node_id, since))
            if token is not None:
                return token, b""
            current = await self._coord.get(key)
            if current is None:
                continue  # released in between: try again
            if (key, current.mod_revision) not in self._orphans:
                return None, current.value
            await self._coord.release(key, current.mod_revision)  # ours, being let go
            self._orphans.discard((key, current.mod_revision))

    def _elsewhere(self, name: str, owner: bytes) -> AttachedElsewhere:
        node, since = parse_owner(owner)
        if node == self.node_id:
            return AttachedElsewhere(
                f"volume {name!r} is still attached on this node ({node}) by an earlier "
                f"session, since {when(since)}; it is released when that session expires",
                name,
                node,
            )
        return AttachedElsewhere(
            f"volume {name!r} is attached read-write on node {node} since {when(since)}; "
            f"detach it there, or migrate it with `ovis vdi attach {name} --migrate-from {node}`",
            name,
            node,
        )

    async def _take_incoming(self, name: str, source: str, session: Session) -> Attachment:
        current = await self._coord.get(self._key(name))
        if current is None:  # the source let go already: an ordinary attach
            return await self._take(name, session)
        holder, _ = parse_owner(current.value)
        if holder != source or source == self.node_id:
            raise self._elsewhere(name, current.value)
        window = await self._window(name)
        if window is None or not window.open() or window.pair != (source, self.node_id):
            raise AttachedElsewhere(
                f"volume {name!r} is attached read-write on node {source} and no migration "
                f"window from {source} to this node ({self.node_id}) is open; open one with "
                f"`ovis vdi attach {name} --migrate-from {source}` against this node",
                name,
                source,
            )
        since = time.time_ns()
        key = self._incoming_key(name)
        token, other = await self._acquire(key, session, since)
        if token is None:
            node = parse_owner(other)[0]
            raise AttachedElsewhere(
                f"volume {name!r} is already being migrated to node {node}", name, node
            )
        attachment = Attachment(name, self.node_id, token, since, session, key)
        attachment.incoming, attachment.window = True, window
        return attachment

    async def detach(self, attachment: Attachment) -> None:
        """One local user fewer; the last one releases the lease (and sets `lost`)."""
        async with self._lock:
            if self._held.get(attachment.name) is not attachment:
                return  # lost already, or detached
            attachment._users -= 1
            if attachment._users > 0:
                return
            self._drop(attachment, "detached")
            key, token = attachment._key, attachment.token
            with contextlib.suppress(CoordinatorError):  # else released in the background
                await self._coord.release(key, token)
                self._orphans.discard((key, token))

    def _drop(self, attachment: Attachment, reason: str) -> None:
        """Mark lost, forget it, and delete its key (now or in the background)."""
        if self._held.get(attachment.name) is attachment:
            del self._held[attachment.name]
        attachment.reason = reason
        attachment.lost.set()
        if not attachment._session.lost.is_set():
            self._orphans.add((attachment._key, attachment.token))
            self._wake.set()

    # -- migration windows and reports ------------------------------------------

    async def open_migration(
        self, name: str, from_node: str, to_node: str, seconds: float
    ) -> MigrationWindow:
        """Let `to_node` attach `name` while `from_node` holds it, for `seconds`.

        Replaces an expired window, or one for the same two nodes (extending
        it).  Raises VolumeInUse if another migration's window is open.
        """
        check_name(name)
        if not seconds > 0:
            raise InvalidVolumeArgument(f"a migration window needs seconds > 0, not {seconds}")
        key = self._window_key(name)
        while True:
            window = MigrationWindow(name, from_node, to_node, time.time_ns() + int(seconds * 1e9))
            old = await self._call("read the migration window", self._coord.get(key))
            now = old and MigrationWindow.decode(name, old.value)
            if now and now.open() and now.pair != window.pair:
                raise VolumeInUse(
                    f"a migration of {name!r} from {now.from_node} to {now.to_node} "
                    f"is open until {when(now.until_ns)}"
                )
            revision = old.mod_revision if old is not None else 0
            try:
                await self._call("open the migration window", self._put_if(key, window, revision))
            except CompareFailed:
                continue
            return window

    async def _put_if(self, key: str, window: MigrationWindow, revision: int) -> None:
        try:
            await self._coord.put_if(key, window.encode(), revision)
        except OutcomeUnknown:
            landed = await self._coord.get(key)
            if landed is None or landed.value != window.encode():
                raise CompareFailed(key, revision, landed.mod_revision if landed else 0) from None

    async def holder(self, name: str) -> AttachInfo | None:
        """Who holds `name` read-write now, or None."""
        infos = await self._infos(f"{self._attach_prefix}{name}", name)
        return infos[0] if infos else None

    async def list(self) -> builtins.list[AttachInfo]:
        """Every volume held read-write in the cluster, by name."""
        return await self._infos(self._attach_prefix, None)

    async def _infos(self, prefix: str, only: str | None) -> builtins.list[AttachInfo]:
        leases, _ = await self._call("list attach leases", self._coord.list(prefix))
        if only is None:
            windows, _ = await self._call("list migrations", self._coord.list(self._migrate_prefix))
        else:
            one = await self._call(
                "read the migration window", self._coord.get(self._window_key(only))
            )
            windows = [one] if one is not None else []
        incoming: dict[str, tuple[str, int]] = {}
        holders: list[tuple[str, str, int, int]] = []
        for kv in leases:
            name, _, rest = kv.key.removeprefix(self._attach_prefix).partition("/")
            if only is not None and name != only:
                continue
            node, since = parse_owner(kv.value)
            if rest == "incoming":
                incoming[name] = (node, kv.mod_revision)
            elif not rest:
                holders.append((name, node, kv.mod_revision, since))
        by_name = {kv.key.removeprefix(self._migrate_prefix): kv.value for kv in windows}
        return [
            AttachInfo(name, node, token, since, incoming.get(name),
                       MigrationWindow.decode(name, by_name.get(name, b"")))
            for name, node, token, since in holders
        ]  # fmt: skip

    async def _window(self, name: str) -> MigrationWindow | None:
        kv = await self._coord.get(self._window_key(name))
        return MigrationWindow.decode(name, kv.value) if kv is not None else None

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except CoordinatorError as exc:
            raise VolumeIOError(f"cannot {what}: the Coordinator: {exc}") from exc

    # -- following the leases --------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._follow())
                group.create_task(self._keep())
        except Exception:  # a bug: the next attach starts it again
            log.exception("following the attach leases failed")

    async def _follow(self) -> None:
        """Mark attached volumes whose keys change; re-check them all after a gap."""
        while True:
            try:
                _, revision = await self._coord.list(self._attach_prefix)
                self._dirty.update(self._held)
                self._wake.set()
                events = self._coord.watch(self._attach_prefix, revision + 1)
                async with contextlib.aclosing(events):
                    async for event in events:
                        name = event.key.removeprefix(self._attach_prefix).partition("/")[0]
                        if name in self._held:
                            self._dirty.add(name)
                            self._wake.set()
            except CoordinatorError as exc:
                log.debug("attach watch restarts: %s", exc)
                await asyncio.sleep(self._poll)

    async def _keep(self) -> None:
        while True:
            await self._sleep()
            self._wake.clear()
            async with self._lock:
                await self._check()

    async def _sleep(self) -> None:
        """Until woken, a session is lost, a window is due, or `poll_interval` passes."""
        timeout = self._poll
        now = time.time_ns()
        for attachment in self._held.values():
            if attachment.incoming and attachment.window is not None:
                timeout = min(timeout, max(0.01, (attachment.window.until_ns - now) / 1e9))
        sessions = {id(a._session): a._session for a in self._held.values()}
        await either(self._wake, *(s.lost for s in sessions.values()), timeout=timeout)

    async def _check(self) -> None:
        for attachment in list(self._held.values()):
            session = attachment._session
            if session.lost.is_set():
                self._drop(attachment, "this node's Coordinator session ended")
            elif not session.alive():
                self._drop(attachment, "this node lost touch with the Coordinator for a TTL")
            else:
                try:
                    await self._check_one(attachment)
                except CoordinatorError as exc:  # keep it marked; look again soon
                    self._dirty.add(attachment.name)
                    log.debug("attach lease of %r not checked: %s", attachment.name, exc)
        for key, token in list(self._orphans):
            try:
                await self._coord.release(key, token)
            except CoordinatorError as exc:
                log.debug("attach lease %r not released yet: %s", key, exc)
            else:
                self._orphans.discard((key, token))

    async def _check_one(self, attachment: Attachment) -> None:
        name = attachment.name
        if attachment.incoming and attachment.window is not None and not attachment.window.open():
            try:
                window = await self._window(name)
            except CoordinatorError:  # cannot see an extension: the window is over
                window = None
            if window is None or window.pair != attachment.window.pair or not window.open():
                closed = f"closed at {when(attachment.window.until_ns)}"
                source = attachment.window.from_node
                self._drop(attachment, f"the migration window {closed} before {source} detached")
                return
            attachment.window = window  # extended
        if name not in self._dirty:
            return
        self._dirty.discard(name)
        mine = await self._coord.get(attachment._key)
        if mine is None:  # the store ended the session (the keepalive may not know yet)
            gone = "its attach lease is gone: this node's Coordinator session ended, or the key"
            self._drop(attachment, f"{gone} was deleted")
        elif mine.mod_revision != attachment.token:
            self._drop(
                attachment, f"its attach lease was taken over (revision {mine.mod_revision})"
            )
        elif attachment.incoming and await self._coord.get(self._key(name)) is None:
            await self._promote(attachment)

    async def _promote(self, attachment: Attachment) -> None:
        """The holder let go: become the holder, with a new and higher token."""
        name, session = attachment.name, attachment._session
        token, _ = await self._acquire(self._key(name), session, attachment.since_ns)
        if token is None:
            self._drop(attachment, "another node attached the volume before the migration ended")
            return
        incoming_key, incoming_token = attachment._key, attachment.token
        attachment.token, attachment._key, attachment.incoming = token, self._key(name), False
        window, attachment.window = attachment.window, None
        attachment.promoted.set()
        log.info("volume %r: migration done, attached here with token %d", name, token)
        self._orphans.add((incoming_key, incoming_token))
        current = await self._coord.get(self._window_key(name))
        done = current and MigrationWindow.decode(name, current.value)
        if current and done and window and done.pair == window.pair:  # the window is spent
            self._orphans.add((current.key, current.mod_revision))

    async def aclose(self) -> None:
        """Stop following; release every lease held here (best effort); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for attachment in list(self._held.values()):
            self._drop(attachment, "the attach leases were closed")
        self._held.clear()
        for key, token in self._orphans:
            with contextlib.suppress(CoordinatorError):
                await self._coord.release(key, token)
        self._orphans.clear()
