"""Every Coordinator passes check_coordinator: SQLite, 1-node etcd, 3-node etcd."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from ovis.coord import Coordinator, EtcdCoordinator, SqliteCoordinator, WatchEvent
from ovis.coord.testing import check_coordinator

from .conftest import EtcdCluster


def test_sqlite_coordinator_passes_the_conformance_suite(tmp_path: Path) -> None:
    async def factory() -> Coordinator:
        return SqliteCoordinator(tmp_path / "coord.db")

    asyncio.run(check_coordinator(factory))


def test_etcd_single_node_passes_the_conformance_suite(etcd1: EtcdCluster) -> None:
    async def factory() -> Coordinator:
        return EtcdCoordinator(etcd1.endpoints)

    asyncio.run(check_coordinator(factory))


def test_etcd_three_node_cluster_passes_the_conformance_suite(etcd3: EtcdCluster) -> None:
    rotation = itertools.count()

    async def factory() -> Coordinator:
        # Successive clients start on different members, so races cross members.
        first = next(rotation) % 3
        return EtcdCoordinator(etcd3.endpoints[first:] + etcd3.endpoints[:first])

    asyncio.run(check_coordinator(factory))


def test_etcd_v3beta_gateway_prefix_works(etcd1: EtcdCluster) -> None:
    async def main() -> None:
        async with EtcdCoordinator(etcd1.endpoints, api_prefix="/v3beta") as coord:
            rev = await coord.put("/v3beta/key", b"value")
            kv = await coord.get("/v3beta/key")
            assert kv is not None and (kv.value, kv.mod_revision) == (b"value", rev)
            events = coord.watch("/v3beta/", rev)
            assert await anext(events) == WatchEvent("put", "/v3beta/key", b"value", rev)
            await events.aclose()

    asyncio.run(main())
