"""ClusterNode: this node's membership, i.e. its registration and the current epoch.

A node registers `ovis/nodes/<id>` (its NodeInfo) with its session, so the
key vanishes when the node leaves, dies or is cut off for a TTL.  Epochs
follow the registrations, and nobody is in charge of them:

- Every node watches `ovis/` (list, then watch from the listed revision + 1;
  re-list on Compacted) and keeps `.epoch` and `.live()` current.
- Whenever the live nodes (ids and NodeInfo) differ from the current epoch's
  members, every node *proposes* the next epoch once `settle` seconds pass
  without a change: it re-reads both (linearizable reads, not its watch
  state) and writes epoch N+1 with put_if on the epoch key's mod_revision.
  The compare-and-swap picks one winner per number; the others see it by
  their watch and find nothing left to do.  A loser's view may have been
  stale, and so may the winner's: then the next round corrects it.
- An epoch never has zero members.  When every node is gone the last epoch
  stays, as Sheepdog keeps its last epoch, and the next node to join starts
  the next one.

A lost session (the store says the lease is gone: a pause past the TTL, a
revoke, an expiry while cut off) turns `accepting_writes()` False at once
(`Session.alive()`); the node then opens a new session and registers again
(rejoin).  If the others had moved to an epoch without it, its return makes
the next one.  If it was back before they settled, the epoch stays: it took
no writes meanwhile, so none was acknowledged without it.  While the store
is unreachable the background tasks retry with backoff; they never end
before `aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from ovis.coord import (
    Compacted,
    CompareFailed,
    Coordinator,
    CoordinatorError,
    OutcomeUnknown,
    Session,
    SessionLost,
    WatchEvent,
)

from ._config import (
    KEY_EPOCH,
    PREFIX_NODES,
    ClusterError,
    EpochRecord,
    NodeIdInUse,
    decode_epoch,
    decode_node,
    live_nodes,
    load_config,
    next_epoch,
)
from ._model import ClusterView, Epoch, NodeInfo
from ._retry import Backoff, either

log = logging.getLogger("ovis.cluster")

_WATCHED = "ovis/"  # one watch covers the epoch key and the node registrations


class ClusterNode(ClusterView):
    """This node in the cluster: registered while alive, following (and moving) the epoch.

    `ttl` is the session's TTL in seconds: a node silent for that long is
    dropped.  `settle` is how long the live nodes must stay unchanged before
    a new epoch is proposed, so that nodes starting together make one epoch.
    `join_timeout` bounds how long `start()` waits for an epoch with this node.
    """

    def __init__(
        self,
        coord: Coordinator,
        me: NodeInfo,
        *,
        ttl: int = 5,
        settle: float = 0.2,
        join_timeout: float = 30.0,
    ) -> None:
        self._coord = coord
        self._me = me
        self._ttl = ttl
        self._settle = settle
        self._join_timeout = join_timeout
        self._copies = 1
        self._session: Session | None = None
        self._epoch = Epoch(0, (), 1)
        self._epoch_revision = 0
        self._history: list[EpochRecord] = []
        self._live: dict[str, NodeInfo] = {}
        self._bumped = asyncio.Event()  # set, then replaced, on every new epoch; set on close
        self._dirty = asyncio.Event()  # live nodes or epoch changed: is a proposal due?
        self._key_gone = asyncio.Event()  # our registration vanished: register again
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._closed = False

    # -- ClusterView -----------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._me.id

    @property
    def me(self) -> NodeInfo:
        return self._me

    @property
    def epoch(self) -> Epoch:
        return self._epoch

    @property
    def history(self) -> list[EpochRecord]:
        """The current epoch's history as last seen, newest (the current one) last."""
        return list(self._history)

    @property
    def session(self) -> Session:
        """The session this node is registered with now (a new one after a rejoin)."""
        if self._session is None:
            raise RuntimeError("ClusterNode.session is used before start()")
        return self._session

    def live(self) -> list[NodeInfo]:
        """The registered nodes as last seen by the watch, sorted by id."""
        return sorted(self._live.values(), key=lambda n: n.id)

    def accepting_writes(self) -> bool:
        return not self._closed and self._session is not None and self._session.alive()

    async def wait_epoch(self, after: int, timeout: float | None = None) -> Epoch:
        """Return the current epoch once its number is > `after`.

        Raises TimeoutError after `timeout` seconds, ClusterError if the node
        is closed first.
        """
        async with asyncio.timeout(timeout):
            while self._epoch.number <= after:
                await self._next_epoch()
        return self._epoch

    def changes(self, after: int | None = None) -> AsyncIterator[Epoch]:
        """Yield each epoch newer than `after` (default: the one current now), as it comes.

        Every call is an independent subscription.  A slow consumer skips
        epochs that were replaced before it looked, but always gets the
        newest.  Ends when the node is closed.
        """
        return self._feed(self._epoch.number if after is None else after)

    async def _feed(self, after: int) -> AsyncIterator[Epoch]:
        while True:
            while self._epoch.number <= after:
                if self._closed:
                    return
                await self._bumped.wait()
            after = self._epoch.number
            yield self._epoch

    async def _next_epoch(self) -> None:
        if self._closed:
            raise ClusterError(f"cluster node {self._me.id} is closed")
        await self._bumped.wait()

    # -- lifetime --------------------------------------------------------------

    async def start(self) -> None:
        """Register this node and return once an epoch includes it (as `me`).

        Raises NotFormatted if the cluster has no config, NodeIdInUse if
        another live session holds this id (a registration left by a process
        that died is waited for, up to `ttl` + 1 seconds), ClusterError if no
        epoch includes this node within `join_timeout`, and the Coordinator's
        errors.  On failure everything started is stopped again.
        """
        if self._started:
            raise RuntimeError("ClusterNode.start() was called twice")
        self._started = True
        try:
            self._copies = (await load_config(self._coord)).copies
            self._epoch = Epoch(0, (), self._copies)
            self._session = await self._coord.open_session(self._ttl)
            await self._register(self._session)
            self._tasks = [
                asyncio.create_task(self._follow_forever(), name=f"epochs-{self._me.id}"),
                asyncio.create_task(self._propose_forever(), name=f"proposer-{self._me.id}"),
                asyncio.create_task(self._stay_registered(), name=f"rejoin-{self._me.id}"),
            ]
            try:
                async with asyncio.timeout(self._join_timeout):
                    while self._epoch.member(self._me.id) != self._me:
                        await self._next_epoch()
            except TimeoutError:
                raise ClusterError(
                    f"node {self._me.id} was in no epoch after {self._join_timeout:g}s "
                    "(is the coordinator reachable?)"
                ) from None
        except BaseException:
            await self.aclose()
            raise
        log.info("node %s joined the cluster in epoch %d", self._me.id, self._epoch.number)

    async def aclose(self) -> None:
        """Stop following, and leave: revoke the session so the others move on at once.

        If the store cannot be reached the session simply expires after its
        TTL.  Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._bumped.set()  # wake waiters: they see the node closed
        if self._session is not None:
            try:
                await self._coord.close_session(self._session, revoke=True)
            except CoordinatorError as exc:
                log.warning(
                    "node %s left without revoking its session (%s); it expires in %ds",
                    self._me.id, exc, self._ttl,
                )  # fmt: skip

    # -- registration ----------------------------------------------------------

    async def _register(self, session: Session) -> None:
        """Write ovis/nodes/<id> = me with `session`, unless another live session holds it."""
        key, value = PREFIX_NODES + self._me.id, self._me.encode()
        deadline = time.monotonic() + self._ttl + 1
        waiting = False
        while True:
            with contextlib.suppress(CompareFailed, OutcomeUnknown):  # both: look what is there
                await self._coord.put_if(key, value, 0, session=session)
                return
            held = await self._coord.get(key)
            if held is None:
                continue
            if held.session == session.id:
                if held.value == value:
                    return
                with contextlib.suppress(CompareFailed):
                    await self._coord.put_if(key, value, held.mod_revision, session=session)
                    return
                continue
            if time.monotonic() >= deadline:
                raise NodeIdInUse(self._me.id)
            if not waiting:
                log.info("node id %s is registered by another session; waiting for it to expire",
                         self._me.id)  # fmt: skip
                waiting = True
            await asyncio.sleep(0.1)

    async def _stay_registered(self) -> None:
        """Register again whenever the session is lost or our key vanishes."""
        backoff = Backoff()
        while True:
            await either(self.session.lost, self._key_gone)
            self._key_gone.clear()
            while True:
                try:
                    await self._rejoin()
                    backoff.reset()
                    break
                except (CoordinatorError, ClusterError) as exc:
                    delay = backoff.next()
                    log.warning("node %s: rejoin failed: %s; retrying in %.1fs",
                                self._me.id, exc, delay)  # fmt: skip
                    await asyncio.sleep(delay)
                except Exception:  # keep trying: a node that cannot rejoin takes no writes
                    log.exception("node %s: rejoin crashed; retrying", self._me.id)
                    await asyncio.sleep(backoff.next())

    async def _rejoin(self) -> None:
        session = self.session
        if session.lost.is_set():
            log.warning(
                "node %s: session %d is lost (expired or revoked): not accepting writes; "
                "rejoining with a new session", self._me.id, session.id,
            )  # fmt: skip
            await self._coord.close_session(session, revoke=False)  # stops its keepalive
            session = self._session = await self._coord.open_session(self._ttl)
        try:
            await self._register(session)
        except SessionLost:
            session.lost.set()  # the next attempt opens a new session
            raise
        log.info("node %s registered with session %d", self._me.id, session.id)

    # -- following the epoch ---------------------------------------------------

    async def _follow_forever(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._follow(backoff)
            except Compacted as exc:
                log.info("cluster watch fell behind (%s): listing again", exc)
            except CoordinatorError as exc:
                delay = backoff.next()
                log.warning("cluster watch failed: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
            except Exception:  # a bug here must not freeze the epoch for good
                log.exception("cluster watch crashed; restarting it")
                await asyncio.sleep(backoff.next())

    async def _follow(self, backoff: Backoff) -> None:
        kvs, revision = await self._coord.list(PREFIX_NODES)
        current = await self._coord.get(KEY_EPOCH)
        backoff.reset()
        nodes = (decode_node(kv.key, kv.value) for kv in kvs)
        self._live = {n.id: n for n in nodes if n is not None}
        if self._me.id not in self._live:
            self._key_gone.set()
        if current is not None:
            self._apply_epoch(current.value, current.mod_revision)
        self._dirty.set()
        # Events up to the epoch read above come again; _apply_epoch skips them.
        async with contextlib.aclosing(self._coord.watch(_WATCHED, revision + 1)) as events:
            async for event in events:
                if event.key == KEY_EPOCH and event.kind == "put":
                    self._apply_epoch(event.value, event.revision)
                    self._dirty.set()
                elif event.key.startswith(PREFIX_NODES):
                    self._apply_node(event)
                    self._dirty.set()

    def _apply_node(self, event: WatchEvent) -> None:
        node_id = event.key.removeprefix(PREFIX_NODES)
        if event.kind == "delete":
            self._live.pop(node_id, None)
            if node_id == self._me.id:
                self._key_gone.set()
        elif (info := decode_node(event.key, event.value)) is not None:
            self._live[info.id] = info

    def _apply_epoch(self, raw: bytes, revision: int) -> None:
        if revision <= self._epoch_revision:
            return
        try:
            epoch, history = decode_epoch(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("ignoring a malformed %s at revision %d: %s", KEY_EPOCH, revision, exc)
            return
        self._epoch_revision = revision
        if epoch.number <= self._epoch.number:
            return
        self._epoch, self._history = epoch, history
        why = history[-1].change() if history else "-"
        members = ", ".join(sorted(epoch.ids))
        log.info("node %s: epoch %d: %s (%s)", self._me.id, epoch.number, members, why)
        bumped, self._bumped = self._bumped, asyncio.Event()
        bumped.set()

    # -- proposing the next epoch ----------------------------------------------

    async def _propose_forever(self) -> None:
        backoff = Backoff()
        while True:
            await self._dirty.wait()
            while self._dirty.is_set():  # wait for `settle` seconds without a change
                self._dirty.clear()
                await asyncio.sleep(self._settle)
            if not self._live or self._live == {m.id: m for m in self._epoch.members}:
                continue
            try:
                await self._propose()
                backoff.reset()
            except CompareFailed:
                self._dirty.set()  # another node moved the epoch first: look again
            except CoordinatorError as exc:
                delay = backoff.next()
                log.warning("proposing an epoch failed: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                self._dirty.set()
            except Exception:  # never stop proposing because of one bad round
                log.exception("proposing an epoch crashed; retrying")
                await asyncio.sleep(backoff.next())
                self._dirty.set()

    async def _propose(self) -> None:
        """Write epoch N+1 = the live nodes, if they differ from epoch N (fresh reads)."""
        live = await live_nodes(self._coord)
        current = await self._coord.get(KEY_EPOCH)
        base, expected = Epoch(0, (), self._copies), 0
        history: list[EpochRecord] = []
        if current is not None:
            expected = current.mod_revision
            try:
                base, history = decode_epoch(current.value)
            except (ValueError, KeyError, TypeError):  # overwrite it, numbering on from ours
                base, history = self._epoch, self._history
        proposal = next_epoch(base, history, live, self._copies)
        if proposal is None:
            return
        try:
            revision = await self._coord.put_if(KEY_EPOCH, proposal, expected)
        except OutcomeUnknown:
            written = await self._coord.get(KEY_EPOCH)
            if written is None or written.value != proposal:
                self._dirty.set()
                return
            revision = written.mod_revision
        self._apply_epoch(proposal, revision)
