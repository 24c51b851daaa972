"""The volume catalog in the Coordinator: conformance, races between nodes, the lock."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from ovis.cluster._catalog import CoordinatorCatalog
from ovis.coord import (
    Coordinator,
    EtcdCoordinator,
    OutcomeUnknown,
    Session,
    SqliteCoordinator,
    Unavailable,
)
from ovis.store import MemoryObjectStore
from ovis.volume import VolumeError, VolumeExists, VolumeLibrary
from ovis.volume._catalog import Catalog, CatalogEntry, SqliteCatalog
from ovis.volume.testing import check_catalog
from tests.etcd import EtcdCluster

NewClient = Callable[[], Coordinator]


@asynccontextmanager
async def clients(new: NewClient, count: int) -> AsyncIterator[list[tuple[Coordinator, Session]]]:
    """`count` Coordinator clients of one store, each with a session; all closed after."""
    opened: list[tuple[Coordinator, Session]] = []
    try:
        for _ in range(count):
            coord = new()
            opened.append((coord, await coord.open_session(ttl=5)))
        yield opened
    finally:
        for coord, _ in opened:
            await coord.aclose()


async def check_coordinator_catalog(new: NewClient) -> None:
    prefixes = (f"conformance-{n}/" for n in itertools.count())
    async with clients(new, 2) as [(first, one), (second, two)]:

        async def factory() -> Catalog:
            return CoordinatorCatalog(first, one, prefix=next(prefixes))

        async def another(catalog: Catalog) -> Catalog:
            assert isinstance(catalog, CoordinatorCatalog)
            return CoordinatorCatalog(second, two, prefix=catalog.key.removesuffix("catalog"))

        await check_catalog(factory, another=another)


def test_sqlite_catalog_passes_the_conformance_suite(tmp_path: Path) -> None:
    names = (tmp_path / f"catalog-{n}.sqlite" for n in itertools.count())

    async def factory() -> Catalog:
        return SqliteCatalog(next(names), fsync=False)

    async def another(catalog: Catalog) -> Catalog:
        assert isinstance(catalog, SqliteCatalog)
        return SqliteCatalog(catalog.path, fsync=False)

    asyncio.run(check_catalog(factory, another=another))


def test_coordinator_catalog_over_sqlite_passes_the_conformance_suite(tmp_path: Path) -> None:
    asyncio.run(check_coordinator_catalog(lambda: SqliteCoordinator(tmp_path / "coord.db")))


def test_coordinator_catalog_over_etcd_passes_the_conformance_suite(etcd1: EtcdCluster) -> None:
    asyncio.run(check_coordinator_catalog(lambda: EtcdCoordinator(etcd1.endpoints)))


def test_two_nodes_creating_volumes_at_once_never_share_a_vid_or_a_name(
    etcd1: EtcdCluster,
) -> None:
    async def main() -> None:
        store = MemoryObjectStore()  # one shared store, as the gateway is on every node
        async with clients(lambda: EtcdCoordinator(etcd1.endpoints), 2) as pairs:
            libraries = [
                VolumeLibrary(store, CoordinatorCatalog(coord, session, prefix="race/"))
                for coord, session in pairs
            ]

            async def create(library: VolumeLibrary, name: str) -> int | None:
                try:
                    return (await library.create(name, 1 << 20)).vid
                except VolumeExists:
                    return None

            own = [create(lib, f"node{i}-{n}") for i, lib in enumerate(libraries) for n in range(3)]
            both = [create(lib, f"both-{n}") for n in range(3) for lib in libraries]
            vids = await asyncio.gather(*own, *both)
            made = [vid for vid in vids if vid is not None]
            assert len(made) == 6 + 3, "each name is created exactly once"
            assert len(set(made)) == len(made), f"two volumes share a vid: {made}"
            seen = [[(v.name, v.vid) for v in await lib.list()] for lib in libraries]
            assert seen[0] == seen[1] and len(seen[0]) == 9
            for library in libraries:
                await library.aclose()

    asyncio.run(main())


def test_operation_excludes_a_second_client_until_the_first_ends(tmp_path: Path) -> None:
    async def main() -> None:
        async with clients(lambda: SqliteCoordinator(tmp_path / "coord.db"), 2) as pairs:
            first, second = (CoordinatorCatalog(coord, session) for coord, session in pairs)
            inside = asyncio.Event()

            async def run_second() -> None:
                async with second.operation():
                    inside.set()

            async with first.operation():
                waiter = asyncio.create_task(run_second())
                await asyncio.sleep(0.3)
                assert not inside.is_set(), "two clients were inside operation() at once"
            await asyncio.wait_for(inside.wait(), 5)
            await waiter

    asyncio.run(main())


def test_operation_gives_up_with_a_clear_message_when_another_node_keeps_it(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with clients(lambda: SqliteCoordinator(tmp_path / "coord.db"), 2) as pairs:
            first, second = (
                CoordinatorCatalog(coord, session, lock_timeout=0.2) for coord, session in pairs
            )
            async with first.operation():
                with pytest.raises(VolumeError, match=r"another node .*pid.* is running a manage"):
                    async with second.operation():
                        pass

    asyncio.run(main())


def test_a_catalog_too_big_for_one_coordinator_value_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with clients(lambda: SqliteCoordinator(tmp_path / "coord.db"), 1) as [pair]:
            catalog = CoordinatorCatalog(*pair, max_bytes=400)
            vid = await catalog.allocate_vid()
            await catalog.commit(put=[CatalogEntry(vid, "a" * 100)])
            with pytest.raises(VolumeError, match="the catalog is full"):
                await catalog.commit(put=[CatalogEntry(vid + 1, "b" * 300)])
            assert [e.vid for e in await catalog.entries()] == [vid]

    asyncio.run(main())


class LosesReplies(SqliteCoordinator):
    """Applies the next `lose` conditional puts, then reports their outcome unknown."""

    lose = 0

    async def put_if(
        self, key: str, value: bytes, expected_revision: int, *, session: Session | None = None
    ) -> int:
        revision = await super().put_if(key, value, expected_revision, session=session)
        if self.lose:
            self.lose -= 1
            raise OutcomeUnknown("the reply was lost")
        return revision


def test_a_change_whose_reply_was_lost_is_applied_once(tmp_path: Path) -> None:
    async def main() -> None:
        coord = LosesReplies(tmp_path / "coord.db")
        async with coord:
            catalog = CoordinatorCatalog(coord, await coord.open_session(ttl=5))
            coord.lose = 1
            first = await catalog.allocate_vid()
            assert await catalog.allocate_vid() == first + 1, "the lost put was redone"
            coord.lose = 1
            await catalog.commit(put=[CatalogEntry(first, "vm")])
            assert await catalog.entries() == [CatalogEntry(first, "vm")]

    asyncio.run(main())


class FailsRelease(SqliteCoordinator):
    """Cannot reach the store for the next `fail` lock releases."""

    fail = 0

    async def delete_if(self, key: str, expected_revision: int) -> int:
        if self.fail:
            self.fail -= 1
            raise Unavailable("the store is unreachable")
        return await super().delete_if(key, expected_revision)


def test_a_lock_left_by_a_failed_release_does_not_block_the_next_operation(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        coord = FailsRelease(tmp_path / "coord.db")
        async with coord:
            catalog = CoordinatorCatalog(coord, await coord.open_session(ttl=5), lock_timeout=2)
            coord.fail = 1
            async with catalog.operation():
                pass
            assert await coord.get(catalog.lock_key) is not None, "the release did fail"
            async with catalog.operation():
                pass
            assert await coord.get(catalog.lock_key) is None

    asyncio.run(main())


def test_a_session_given_as_a_callable_follows_the_current_one(tmp_path: Path) -> None:
    async def main() -> None:
        async with clients(lambda: SqliteCoordinator(tmp_path / "coord.db"), 1) as [pair]:
            coord, session = pair
            current: list[Session] = [session]
            catalog = CoordinatorCatalog(coord, lambda: current[0])
            await coord.close_session(session)  # the node lost it and joins again
            current[0] = await coord.open_session(ttl=5)
            async with catalog.operation():
                lock = await coord.get(catalog.lock_key)
                assert lock is not None and lock.session == current[0].id

    asyncio.run(main())
