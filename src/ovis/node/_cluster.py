"""A node as a cluster member: the pieces `ovis node start --cluster URL` runs.

Built in an order that lets every address be known before the node joins:
the coordinator client and the cluster's config first (an unformatted
cluster is a one-line error), then the local object store, the replica
service and its peer listener, the gateway store and the catalog; the caller
then opens its NBD and API listeners over a VolumeLibrary on them, and only
then `join`s, registering a NodeInfo that carries all three addresses.

Volumes: the library runs on the gateway (ReplicatedObjectStore), names live
in the Coordinator (CoordinatorCatalog), and a read-write open takes the
volume's attach lease first (ClusterAttacher): its revision is the fencing
token every write carries, raised on every replica before the first write.
Another node's lease makes the NBD handshake refuse the volume, with the
holder named in the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ovis.block._device import BlockDevice, BlockError, Buffer, Filter
from ovis.cluster._attach import AttachLeases
from ovis.cluster._attach_model import AttachedElsewhere, Attachment
from ovis.cluster._catalog import CoordinatorCatalog
from ovis.cluster._config import load_config
from ovis.cluster._gateway import ReplicatedObjectStore
from ovis.cluster._membership import ClusterNode
from ovis.cluster._model import ClusterView, Epoch, NodeInfo
from ovis.cluster._peer_client import PeerPool
from ovis.cluster._peer_server import PeerServer
from ovis.cluster._recovery import Recovery
from ovis.cluster._service import StorageService
from ovis.coord import Coordinator, CoordinatorError, open_coordinator
from ovis.nbd._constants import Errno
from ovis.store import LocalObjectStore
from ovis.volume import ObjectVolume, VolumeLibrary

log = logging.getLogger("ovis.node")


class _LateView(ClusterView):
    """The ClusterNode, once it exists: the service answers WrongEpoch(0) before."""

    def __init__(self, node_id: str) -> None:
        self._node_id = node_id
        self.target: ClusterNode | None = None

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def epoch(self) -> Epoch:
        return self.target.epoch if self.target is not None else Epoch(0, (), 1)

    async def wait_epoch(self, after: int, timeout: float | None = None) -> Epoch:
        async with asyncio.timeout(timeout):
            while self.target is None:
                await asyncio.sleep(0.05)
        return await self.target.wait_epoch(after, timeout)

    def accepting_writes(self) -> bool:
        return self.target is not None and self.target.accepting_writes()


def node_identity(data_dir: Path, wanted: str | None) -> str:
    """This data directory's node id: `wanted` the first time, then whatever it was."""
    path = data_dir / "node.json"
    if path.exists():
        known = str(json.loads(path.read_text())["id"])
        if wanted and wanted != known:
            raise ValueError(
                f"{data_dir} belongs to node {known!r}; use --node-id {known} or another --data"
            )
        return known
    node_id = wanted or f"node-{secrets.token_hex(3)}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"id": node_id}))
    os.replace(tmp, path)
    return node_id


class ClusterStack:
    """Coordinator, store, replica service, peers, gateway, recovery and leases of one node."""

    def __init__(self, url: str, data_dir: Path, node_id: str | None, *, fsync: bool) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.node_id = node_id_ = node_identity(data_dir, node_id)
        self.coord: Coordinator = open_coordinator(url)
        self.store = LocalObjectStore(data_dir / "objects", fsync=fsync)
        self.view = _LateView(node_id_)
        self.service = StorageService(self.store, self.view, data_dir / "fences.json")
        self.peer_server = PeerServer(self.service)
        self.pool = PeerPool()
        self.gateway = ReplicatedObjectStore(self.service, self.view, self.pool)
        self.node: ClusterNode | None = None
        self.recovery: Recovery | None = None
        self.leases: AttachLeases | None = None
        self.library: VolumeLibrary | None = None
        self.attacher = ClusterAttacher(self)
        self._tasks: list[asyncio.Task[None]] = []
        self.peer_address = ""

    async def prepare(self, bind: str, peer_port: int) -> VolumeLibrary:
        """Check the cluster is formatted, listen for peers; the library to serve."""
        await load_config(self.coord)
        host, port = await self.peer_server.listen(bind, peer_port)
        self.peer_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        catalog = CoordinatorCatalog(self.coord, self._session)
        self.library = VolumeLibrary(self.gateway, catalog)
        return self.library

    def _session(self) -> Any:
        assert self.node is not None, "the catalog is used before the node joined"
        return self.node.session

    async def join(
        self, me: NodeInfo, on_catalog: Callable[[], Any], *, ttl: int, recovery_rate: int
    ) -> None:
        """Register in the cluster and start the epoch, recovery and catalog followers."""
        self.node = ClusterNode(self.coord, me, ttl=ttl)
        await self.node.start()
        self.view.target = self.node
        self.leases = AttachLeases(self.coord, self._session, me.id)
        self.recovery = Recovery(
            self.service, self.view, self.pool, self.coord, self.data_dir, max_rate=recovery_rate
        )
        self.recovery.start()
        self._tasks.append(asyncio.create_task(self._follow_epochs()))
        self._tasks.append(asyncio.create_task(self._follow_catalog(on_catalog)))
        self._tasks.append(asyncio.create_task(self._follow_attachments()))

    async def _follow_epochs(self) -> None:
        assert self.node is not None and self.recovery is not None
        async for epoch in self.node.changes():
            log.info("epoch %d: %s", epoch.number, ", ".join(sorted(epoch.ids)))
            self.recovery.notify()
            await self.attacher.refence()

    async def _follow_catalog(self, changed: Callable[[], Any]) -> None:
        """Refresh the NBD listing whenever any node changes the catalog."""
        while True:
            try:
                _, revision = await self.coord.list("ovis/catalog")
                await changed()
                async with contextlib.aclosing(self.coord.watch("ovis/catalog", revision + 1)) as w:
                    async for _ in w:
                        await changed()
            except (CoordinatorError, BlockError, OSError) as exc:
                log.debug("catalog watch restarts: %s", exc)
                await asyncio.sleep(0.5)

    async def _follow_attachments(self) -> None:
        """Keep `attacher.elsewhere` (who holds which volume) for the NBD handshake."""
        prefix = "ovis/attach/"
        while True:
            try:
                held, revision = await self.coord.list(prefix)
                holders = {kv.key: kv.value for kv in held}
                self.attacher.learn(prefix, holders)
                async with contextlib.aclosing(self.coord.watch(prefix, revision + 1)) as w:
                    async for event in w:
                        if event.kind == "put":
                            holders[event.key] = event.value
                        else:
                            holders.pop(event.key, None)
                        self.attacher.learn(prefix, holders)
            except (CoordinatorError, OSError) as exc:
                log.debug("attachment watch restarts: %s", exc)
                await asyncio.sleep(0.5)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.recovery is not None:
            await self.recovery.aclose()
        if self.leases is not None:
            await self.leases.aclose()
        await self.peer_server.aclose()
        await self.pool.aclose()
        if self.node is not None:
            await self.node.aclose()
        await self.store.aclose()
        await self.coord.aclose()


class _Held:
    """One attachment and the volume it covers (whose vid changes on each snapshot)."""

    def __init__(self, attachment: Attachment, vid: int) -> None:
        self.attachment = attachment
        self.volume: ObjectVolume | None = None
        self._vid = vid
        self.watch: asyncio.Task[None] | None = None

    @property
    def vid(self) -> int:
        return self.volume.inode.vid if self.volume is not None else self._vid

    @property
    def incoming(self) -> bool:
        """A migration's second writer, not yet promoted: it must not raise the fence."""
        return bool(getattr(self.attachment, "incoming", False)) and not (
            self.attachment.promoted.is_set()
        )


class ClusterAttacher:
    """Takes a volume's attach lease around its read-write opening on this node.

    Order: lease, then bind its token to the volume's vid and raise the fence
    on every member, then open (opening writes the inode, with the token).
    """

    def __init__(self, stack: ClusterStack) -> None:
        self._stack = stack
        self._held: dict[str, _Held] = {}
        self.migrations: dict[str, str] = {}  # name -> source node, opened by `vdi attach`
        self._elsewhere: dict[str, str] = {}  # name -> the other node holding it

    def learn(self, prefix: str, holders: dict[str, bytes]) -> None:
        """The attach keys as the Coordinator has them now (key -> JSON value)."""
        elsewhere = {}
        for key, raw in holders.items():
            name = key.removeprefix(prefix)
            if "/" in name:
                continue  # a migration's incoming key
            try:
                node = str(json.loads(raw)["node"])
            except (ValueError, KeyError, TypeError):
                continue
            if node != self._stack.node_id:
                elsewhere[name] = node
        self._elsewhere = elsewhere

    def refusal(self, name: str) -> str | None:
        """Why this node cannot attach `name` now (another node holds it), or None."""
        node = self._elsewhere.get(name)
        if node is None or self.migrations.get(name) == node:
            return None
        return (
            f"volume {name!r} is attached read-write on node {node}; disconnect its "
            f"clients there, or migrate: ovis vdi attach {name} --migrate-from {node}"
        )

    async def attach(self, name: str) -> _Held:
        leases, library = self._stack.leases, self._stack.library
        assert leases is not None and library is not None
        try:
            attachment = await leases.attach(name)
        except AttachedElsewhere:
            source = self.migrations.get(name)
            if source is None:
                raise
            attachment = await leases.attach(name, migrate_from=source)
        held: _Held | None = None
        try:
            held = _Held(attachment, (await library.info(name)).vid)
            self._stack.gateway.bind(held.vid, attachment.token)
            if not held.incoming:
                await self._stack.gateway.fence(held.vid, attachment.token)
        except BaseException:
            if held is not None:
                self._stack.gateway.unbind(held.vid)
            with contextlib.suppress(CoordinatorError):
                await leases.detach(attachment)
            raise
        self._held[name] = held
        return held

    async def opened(self, held: _Held, volume: ObjectVolume) -> BlockDevice:
        """The volume is open: follow its lease, guard its writes."""
        held.volume = volume
        held.watch = asyncio.create_task(self._watch(held))
        return _Guarded(volume, held.attachment)

    async def _watch(self, held: _Held) -> None:
        attachment = held.attachment
        lost = asyncio.ensure_future(attachment.lost.wait())
        promoted = asyncio.ensure_future(attachment.promoted.wait())
        try:
            await asyncio.wait([lost, promoted], return_when=asyncio.FIRST_COMPLETED)
            if promoted.done() and not lost.done():
                self._stack.gateway.bind(held.vid, attachment.token)
                await self._stack.gateway.fence(held.vid, attachment.token)
                self.migrations.pop(attachment.name, None)
                await attachment.lost.wait()
            self._stack.gateway.revoke(held.vid, attachment.reason or "attach lease lost")
            log.warning("volume %r: attach lease lost: %s", attachment.name, attachment.reason)
        finally:
            lost.cancel()
            promoted.cancel()

    async def refence(self) -> None:
        """After an epoch change: raise every held fence on the new members too."""
        for held in list(self._held.values()):
            if not held.incoming and not held.attachment.lost.is_set():
                self._stack.gateway.bind(held.vid, held.attachment.token)
                with contextlib.suppress(BlockError):
                    await self._stack.gateway.fence(held.vid, held.attachment.token)

    async def detach(self, held: _Held) -> None:
        if held.watch is not None:
            held.watch.cancel()
        self._stack.gateway.unbind(held.vid)
        self._held.pop(held.attachment.name, None)
        leases = self._stack.leases
        if leases is not None:
            with contextlib.suppress(CoordinatorError):
                await leases.detach(held.attachment)


class _Guarded(Filter):
    """Refuses writes once the volume's attach lease is lost (EPERM, with the reason)."""

    def __init__(self, inner: BlockDevice, attachment: Attachment) -> None:
        super().__init__(inner)
        self._attachment = attachment

    def _check(self) -> None:
        if self._attachment.lost.is_set():
            raise BlockError(
                Errno.EPERM, f"volume {self._attachment.name!r}: {self._attachment.reason}"
            )

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        self._check()
        await self.next.write(offset, data, fua=fua)

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        self._check()
        await self.next.trim(offset, length, fua=fua)

    async def zero(
        self, offset: int, length: int, *, may_trim: bool = False, fast: bool = False,
        fua: bool = False,
    ) -> None:  # fmt: skip
        self._check()
        await self.next.zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)

    async def flush(self) -> None:
        self._check()
        await self.next.flush()
