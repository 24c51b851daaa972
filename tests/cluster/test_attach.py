"""Attach leases: one writer per volume, with a time-bounded window for a migration.

Every test runs on the SQLite Coordinator and on a real 1-node etcd; each
node is its own Coordinator client with its own session.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from ovis.cluster._attach import AttachLeases
from ovis.cluster._attach_model import AttachedElsewhere
from ovis.coord import Coordinator, EtcdCoordinator, Session, SqliteCoordinator
from ovis.volume import VolumeInUse
from tests.etcd import EtcdCluster

NewClient = Callable[[], Coordinator]
_prefixes = (f"attach-test-{n}/" for n in itertools.count())


@pytest.fixture(params=["sqlite", "etcd"])
def new_client(request: pytest.FixtureRequest, tmp_path: Path) -> NewClient:
    if request.param == "sqlite":
        return lambda: SqliteCoordinator(tmp_path / "coord.db", poll_interval=0.02)
    etcd: EtcdCluster = request.getfixturevalue("etcd1")
    return lambda: EtcdCoordinator(etcd.endpoints)


class Node:
    """One node: its Coordinator client, session and attach leases."""

    def __init__(
        self, coord: Coordinator, session: Session, leases: AttachLeases, prefix: str
    ) -> None:
        self.prefix = prefix
        self.coord = coord
        self.session = session
        self.leases = leases


@asynccontextmanager
async def cluster(new: NewClient, *ids: str) -> AsyncIterator[dict[str, Node]]:
    prefix = next(_prefixes)
    async with AsyncExitStack() as stack:
        nodes = {}
        for node_id in ids:
            coord = new()
            stack.push_async_callback(coord.aclose)
            session = await coord.open_session(ttl=5)
            leases = AttachLeases(coord, session, node_id, prefix=prefix, poll_interval=0.1)
            stack.push_async_callback(leases.aclose)
            nodes[node_id] = Node(coord, session, leases, prefix)
        yield nodes


async def soon(event: asyncio.Event, timeout: float = 3) -> None:
    await asyncio.wait_for(event.wait(), timeout)


def test_a_second_node_is_refused_with_the_holder_named(new_client: NewClient) -> None:
    async def main() -> None:
        async with cluster(new_client, "a", "b") as nodes:
            await nodes["a"].leases.attach("vm")
            with pytest.raises(AttachedElsewhere) as refused:
                await nodes["b"].leases.attach("vm")
            message = str(refused.value)
            assert "\n" not in message
            assert "attached read-write on node a since 20" in message
            assert "detach it there" in message
            assert "ovis vdi attach vm --migrate-from a" in message
            assert refused.value.node == "a" and isinstance(refused.value, VolumeInUse)

    asyncio.run(main())


def test_attaching_twice_on_one_node_shares_the_lease_until_the_last_detach(
    new_client: NewClient,
) -> None:
    async def main() -> None:
        async with cluster(new_client, "a", "b") as nodes:
            a, b = nodes["a"].leases, nodes["b"].leases
            first = await a.attach("vm")
            again = await a.attach("vm")
            assert again is first
            await a.detach(first)
            assert not first.lost.is_set()
            with pytest.raises(AttachedElsewhere):
                await b.attach("vm")
            await a.detach(again)
            assert first.lost.is_set() and first.reason == "detached"
            taken = await b.attach("vm")
            assert taken.token > first.token

    asyncio.run(main())


def test_session_loss_releases_the_volume_to_the_next_node_with_a_higher_token(
    new_client: NewClient,
) -> None:
    async def main() -> None:
        async with cluster(new_client, "a", "b") as nodes:
            held = await nodes["a"].leases.attach("vm")
            await nodes["a"].coord.close_session(nodes["a"].session)  # the store ends it
            await soon(held.lost)
            assert "session ended" in held.reason, held.reason
            taken = await nodes["b"].leases.attach("vm")
            assert taken.token > held.token

    asyncio.run(main())


def test_an_open_window_admits_the_destination_as_second_writer_with_a_higher_token(
    new_client: NewClient,
) -> None:
    async def main() -> None:
        async with cluster(new_client, "a", "b") as nodes:
            a, b = nodes["a"].leases, nodes["b"].leases
            held = await a.attach("vm")
            window = await b.open_migration("vm", "a", "b", 30)
            incoming = await b.attach("vm", migrate_from="a")
            assert incoming.incoming and incoming.token > held.token
            info = await a.holder("vm")
            assert info is not None and (info.node, info.token) == ("a", held.token)
            assert info.incoming == ("b", incoming.token) and info.window == window
            await asyncio.sleep(0.3)
            assert not incoming.promoted.is_set() and not incoming.lost.is_set()

    asyncio.run(main())


def test_the_holder_detaching_promotes_the_incoming_attachment(new_client: NewClient) -> None:
    async def main() -> None:
        async with cluster(new_client, "a", "b") as nodes:
            a, b = nodes["a"].leases, nodes["b"].leases
            held = await a.attach("vm")
            await b.open_migration("vm", "a", "b", 30)
            incoming = await b.attach("vm", migrate_from="a")
            first_token = incoming.token
            await a.detach(held)
            await soon(incoming.promoted)
            assert not incoming.incoming and incoming.token > first_token
            assert not incoming.lost.is_set()
            info = await a.holder("vm")
            assert info is not None and (info.node, info.token) == ("b", incoming.token)
            for _ in range(50):  # the incoming key and the spent window go in the background
                info = await a.holder("vm")
                if info is not None and info.incoming is None and info.window is None:
                    break
                await asyncio.sleep(0.05)
            assert info is not None and info.incoming is None and info.window is None

    asyncio.run(main())


def test_a_window_that_closes_first_revokes_the_incoming_attachment(
    new_client: NewClient,
) -> None:
    async def main() -> None:
        async with cluster(new_client, "a", "b") as nodes:
            a, b = nodes["a"].leases, nodes["b"].leases
            held = await a.attach("vm")
            await b.open_migration("vm", "a", "b", 0.4)
            incoming = await b.attach("vm", migrate_from="a")
            await soon(incoming.lost)
            assert "migration window closed" in incoming.reason and "before a detached" in (
                incoming.reason
            )
            assert not incoming.promoted.is_set() and not held.lost.is_set()
            for _ in range(50):
                info = await a.holder("vm")
                if info is not None and info.incoming is None:
                    break
                await asyncio.sleep(0.05)
            assert info is not None and info.node == "a" and info.incoming is None

    asyncio.run(main())


def test_without_a_window_for_this_node_migrating_is_refused(new_client: NewClient) -> None:
    async def main() -> None:
        async with cluster(new_client, "a", "b", "c") as nodes:
            a, b, c = nodes["a"].leases, nodes["b"].leases, nodes["c"].leases
            await a.attach("vm")
            with pytest.raises(AttachedElsewhere, match="no migration window from a to this node"):
                await b.attach("vm", migrate_from="a")
            await c.open_migration("vm", "a", "c", 30)
            with pytest.raises(AttachedElsewhere, match="no migration window from a to this node"):
                await b.attach("vm", migrate_from="a")
            with pytest.raises(AttachedElsewhere, match="on node a since"):
                await c.attach("vm", migrate_from="b")  # b does not hold it

    asyncio.run(main())


def test_a_volume_being_migrated_cannot_be_taken_by_a_third_node(new_client: NewClient) -> None:
    async def main() -> None:
        async with cluster(new_client, "a", "b", "c") as nodes:
            await nodes["a"].leases.attach("vm")
            await nodes["b"].leases.open_migration("vm", "a", "b", 30)
            await nodes["b"].leases.attach("vm", migrate_from="a")
            with pytest.raises(AttachedElsewhere, match="being migrated to node b"):
                await nodes["c"].leases.attach("vm")

    asyncio.run(main())


def test_a_second_migration_window_is_refused_while_one_is_open(new_client: NewClient) -> None:
    async def main() -> None:
        async with cluster(new_client, "a") as nodes:
            leases = nodes["a"].leases
            first = await leases.open_migration("vm", "a", "b", 30)
            with pytest.raises(VolumeInUse, match="from a to b is open until"):
                await leases.open_migration("vm", "a", "c", 30)
            longer = await leases.open_migration("vm", "a", "b", 60)
            assert longer.until_ns > first.until_ns

    asyncio.run(main())


def test_list_reports_every_held_volume(new_client: NewClient) -> None:
    async def main() -> None:
        async with cluster(new_client, "a", "b") as nodes:
            a, b = nodes["a"].leases, nodes["b"].leases
            x = await a.attach("x")
            y = await b.attach("y")
            await b.open_migration("x", "a", "b", 30)
            incoming = await b.attach("x", migrate_from="a")
            infos = await b.list()
            assert [(i.name, i.node, i.token) for i in infos] == [
                ("x", "a", x.token),
                ("y", "b", y.token),
            ]
            assert infos[0].incoming == ("b", incoming.token) and infos[1].incoming is None
            assert await a.holder("z") is None

    asyncio.run(main())


def test_closing_the_leases_releases_every_volume(new_client: NewClient) -> None:
    async def main() -> None:
        async with cluster(new_client, "a", "b") as nodes:
            held = await nodes["a"].leases.attach("vm")
            await nodes["a"].leases.aclose()
            await nodes["a"].leases.aclose()  # idempotent
            assert held.lost.is_set()
            await nodes["b"].leases.attach("vm")

    asyncio.run(main())


def test_an_attach_key_deleted_behind_the_holders_back_ends_its_attachment(
    new_client: NewClient,
) -> None:
    async def main() -> None:
        async with cluster(new_client, "a", "b") as nodes:
            held = await nodes["a"].leases.attach("vm")
            key = f"{nodes['b'].prefix}attach/vm"
            await nodes["b"].coord.delete_if(key, held.token)  # an operator's etcdctl del
            await soon(held.lost)
            assert "lease is gone" in held.reason, held.reason

    asyncio.run(main())
