"""A cluster of nodes inside the test process: real stores, real TCP between them.

Each node has its own LocalObjectStore, StorageService, PeerServer on
127.0.0.1:0, PeerPool, ClusterNode (its own SqliteCoordinator client on one
shared database file) and ReplicatedObjectStore, so tests can look at every
replica directly and stop nodes without processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from ovis.cluster._config import format_cluster
from ovis.cluster._gateway import ReplicatedObjectStore
from ovis.cluster._membership import ClusterNode
from ovis.cluster._model import NodeInfo
from ovis.cluster._peer_client import PeerPool
from ovis.cluster._peer_server import PeerServer
from ovis.cluster._recovery import Recovery
from ovis.cluster._service import StorageService
from ovis.coord import Coordinator, SqliteCoordinator
from ovis.node._cluster import _LateView
from ovis.store import LocalObjectStore


class Node:
    """One in-process node; `start()` joins, `stop()` leaves (cleanly or not)."""

    def __init__(self, root: Path, db: Path, node_id: str, *, ttl: int = 2) -> None:
        self.id = node_id
        self.dir = root / node_id
        self.db = db
        self.ttl = ttl
        self.coord: Coordinator | None = None
        self.store: LocalObjectStore | None = None
        self.gateway: ReplicatedObjectStore | None = None
        self.recovery: Recovery | None = None
        self.member: ClusterNode | None = None
        self._server: PeerServer | None = None
        self.pool: PeerPool | None = None
        self._follow: asyncio.Task[None] | None = None
        self.port = 0  # kept across restarts, so peers find the node where it was

    async def start(self, *, recovery: bool = True) -> None:
        self.coord = SqliteCoordinator(self.db)
        self.store = LocalObjectStore(self.dir / "objects", fsync=False)
        view = _LateView(self.id)
        self.service = StorageService(self.store, view, self.dir / "fences.json")
        self._server = PeerServer(self.service)
        host, self.port = await self._server.listen("127.0.0.1", self.port)
        self.pool = PeerPool(timeout=2.0)
        self.gateway = ReplicatedObjectStore(self.service, view, self.pool, retry_deadline=15)
        me = NodeInfo(self.id, self.id, 1.0, f"{host}:{self.port}")
        self.member = ClusterNode(self.coord, me, ttl=self.ttl, settle=0.05)
        await self.member.start()
        view.target = self.member
        if recovery:
            self.recovery = Recovery(self.service, view, self.pool, self.coord, self.dir)
            self.recovery.start()
            self._follow = asyncio.create_task(self._notify())

    async def _notify(self) -> None:
        assert self.member is not None and self.recovery is not None
        async for _ in self.member.changes():
            self.recovery.notify()

    async def stop(self) -> None:
        """Leave cleanly: the others start a new epoch at once."""
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        if self.recovery is not None:
            await self.recovery.aclose()
        if self._server is not None:
            await self._server.aclose()
        if self.pool is not None:
            await self.pool.aclose()
        if self.member is not None:
            await self.member.aclose()
        if self.store is not None:
            await self.store.aclose()
        if self.coord is not None:
            await self.coord.aclose()
        self.member = None


async def start_cluster(
    root: Path, count: int, copies: int, *, ttl: int = 2, recovery: bool = True
) -> list[Node]:
    root.mkdir(parents=True, exist_ok=True)
    db = root / "coord.sqlite"
    async with SqliteCoordinator(db) as coord:
        await format_cluster(coord, copies)
    nodes = [Node(root, db, f"n{i}", ttl=ttl) for i in range(count)]
    for node in nodes:
        await node.start(recovery=recovery)
    await settle(nodes)
    return nodes


async def settle(nodes: list[Node], timeout: float = 10) -> None:
    """Wait until every running node knows the same epoch with exactly the running nodes."""
    running = [n for n in nodes if n.member is not None]
    want = {n.id for n in running}
    async with asyncio.timeout(timeout):
        while True:
            epochs = {n.member.epoch.number for n in running if n.member is not None}
            ids = [n.member.epoch.ids for n in running if n.member is not None]
            if len(epochs) == 1 and all(i == want for i in ids):
                return
            await asyncio.sleep(0.02)


async def stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        await node.stop()
