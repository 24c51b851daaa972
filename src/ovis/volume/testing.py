"""Test tools for volume catalogs: the conformance suite `check_catalog(factory)`.

Every `Catalog` (SQLite, the Coordinator's) must pass it, so the library
runs unchanged on one node or in a cluster.  With `another`, the suite also
races two clients of one catalog (two processes, two nodes) against each
other: vids never collide, and a name is never taken twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ovis._testing import expect_raises

from ._catalog import Catalog, CatalogEntry
from ._errors import VolumeError, VolumeExists

Factory = Callable[[], Awaitable[Catalog]]
Another = Callable[[Catalog], Awaitable[Catalog]]
_Check = Callable[[Catalog], Awaitable[None]]
_TwoClients = Callable[[Catalog, Catalog], Awaitable[None]]


async def check_catalog(factory: Factory, *, another: Another | None = None) -> None:
    """Run every check on a fresh, empty catalog from `factory`; AssertionError on failure.

    `another(catalog)`, if given, returns a second client of the same
    catalog (as another process or node would open it): the suite checks
    that it sees every commit and that the two race safely.
    """
    checks: list[_Check] = [
        _check_empty,
        _check_vids_grow,
        _check_put_and_read,
        _check_entry_order,
        _check_replace_and_delete,
        _check_name_taken_twice,
        _check_failed_commit_applies_nothing,
        _check_snapshot_and_rollback_shapes,
        _check_operation,
        _check_close,
    ]
    for check in checks:
        catalog = await factory()
        try:
            await check(catalog)
        finally:
            await catalog.aclose()
    if another is None:
        return
    pairs: list[_TwoClients] = [
        _check_other_client_sees_commits,
        _check_concurrent_vids_never_collide,
        _check_concurrent_commits,
    ]
    for race in pairs:
        first = await factory()
        try:
            second = await another(first)
            try:
                await race(first, second)
            finally:
                await second.aclose()
        finally:
            await first.aclose()


async def _check_empty(catalog: Catalog) -> None:
    assert await catalog.entries() == [], "a new catalog has entries"
    assert await catalog.entries("vm") == []
    assert await catalog.lookup("vm") is None
    assert await catalog.lookup("vm", "tag") is None
    assert await catalog.get(1) is None


async def _check_vids_grow(catalog: Catalog) -> None:
    vids = [await catalog.allocate_vid() for _ in range(5)]
    assert vids[0] >= 1, f"vid {vids[0]} handed out"
    assert vids == sorted(set(vids)), f"vids {vids} are not strictly increasing"
    entry = CatalogEntry(vids[-1], "vm")
    await catalog.commit(put=[entry])
    await catalog.commit(delete=[entry.vid])
    assert await catalog.allocate_vid() > vids[-1], "a vid was handed out twice"


async def _check_put_and_read(catalog: Catalog) -> None:
    volume = CatalogEntry(await catalog.allocate_vid(), "vm")
    snapshot = CatalogEntry(await catalog.allocate_vid(), "vm", "monday")
    other = CatalogEntry(await catalog.allocate_vid(), "disque-é")  # non-ASCII round-trips
    await catalog.commit(put=[volume, snapshot, other])
    assert await catalog.lookup("vm") == volume
    assert await catalog.lookup("vm", "monday") == snapshot
    assert await catalog.lookup("vm", "tuesday") is None
    assert await catalog.lookup("disque-é") == other
    assert await catalog.get(snapshot.vid) == snapshot
    assert await catalog.get(snapshot.vid + 100) is None
    assert await catalog.entries("vm") == [volume, snapshot]
    assert await catalog.entries("nothing") == []


async def _check_entry_order(catalog: Catalog) -> None:
    vids = [await catalog.allocate_vid() for _ in range(5)]
    shuffled = [
        CatalogEntry(vids[0], "b", "z"),
        CatalogEntry(vids[1], "b"),
        CatalogEntry(vids[2], "a", "y"),
        CatalogEntry(vids[3], "b", "a"),
        CatalogEntry(vids[4], "a"),
    ]
    await catalog.commit(put=shuffled)
    expected = [shuffled[4], shuffled[2], shuffled[1], shuffled[0], shuffled[3]]
    got = await catalog.entries()
    assert got == expected, f"entries() order: {[e.spec for e in got]}"


async def _check_replace_and_delete(catalog: Catalog) -> None:
    entry = CatalogEntry(await catalog.allocate_vid(), "vm")
    await catalog.commit(put=[entry])
    renamed = CatalogEntry(entry.vid, "vm2")
    await catalog.commit(put=[renamed])
    assert await catalog.lookup("vm") is None, "put did not replace the vid's entry"
    assert await catalog.get(entry.vid) == renamed
    await catalog.commit(delete=[entry.vid])
    assert await catalog.get(entry.vid) is None
    assert await catalog.entries() == []
    await catalog.commit(delete=[entry.vid])  # deleting what is gone is no error


async def _check_name_taken_twice(catalog: Catalog) -> None:
    first = CatalogEntry(await catalog.allocate_vid(), "vm", "s")
    await catalog.commit(put=[first])
    second = CatalogEntry(await catalog.allocate_vid(), "vm", "s")
    await expect_raises(VolumeExists, "commit of a taken name@tag", catalog.commit(put=[second]))
    twins = [CatalogEntry(await catalog.allocate_vid(), "new"), CatalogEntry(second.vid, "new")]
    await expect_raises(VolumeExists, "commit taking one name twice", catalog.commit(put=twins))
    assert await catalog.entries() == [first]


async def _check_failed_commit_applies_nothing(catalog: Catalog) -> None:
    keep = CatalogEntry(await catalog.allocate_vid(), "keep")
    taken = CatalogEntry(await catalog.allocate_vid(), "taken")
    await catalog.commit(put=[keep, taken])
    fresh = CatalogEntry(await catalog.allocate_vid(), "fresh")
    clash = [fresh, CatalogEntry(await catalog.allocate_vid(), "taken")]
    await expect_raises(
        VolumeExists, "a clashing commit", catalog.commit(put=clash, delete=[keep.vid])
    )
    assert await catalog.entries() == [keep, taken], "a failed commit was partly applied"


async def _check_snapshot_and_rollback_shapes(catalog: Catalog) -> None:
    """The library's commits: a name moves to a new vid within one commit."""
    working = CatalogEntry(await catalog.allocate_vid(), "vm")
    await catalog.commit(put=[working])
    # Snapshot: the old vid becomes vm@s, the name continues on a new vid.
    frozen = CatalogEntry(working.vid, "vm", "s")
    working = CatalogEntry(await catalog.allocate_vid(), "vm")
    await catalog.commit(put=[frozen, working])
    assert await catalog.entries("vm") == [working, frozen]
    # Rollback: the name moves to another new vid and the old working vid goes.
    rolled = CatalogEntry(await catalog.allocate_vid(), "vm")
    await catalog.commit(put=[rolled], delete=[working.vid])
    assert await catalog.entries("vm") == [rolled, frozen]


async def _check_operation(catalog: Catalog) -> None:
    async with catalog.operation():
        entry = CatalogEntry(await catalog.allocate_vid(), "vm")
        await catalog.commit(put=[entry])
    try:
        async with catalog.operation():
            raise KeyError("inside")
    except KeyError:
        pass
    async with catalog.operation():  # the failed one gave its turn back
        assert await catalog.lookup("vm") == entry


async def _check_close(catalog: Catalog) -> None:
    await catalog.commit(put=[CatalogEntry(await catalog.allocate_vid(), "vm")])
    await catalog.aclose()
    await catalog.aclose()  # idempotent
    await expect_raises(VolumeError, "lookup after aclose", catalog.lookup("vm"))
    await expect_raises(VolumeError, "allocate_vid after aclose", catalog.allocate_vid())
    await expect_raises(VolumeError, "commit after aclose", catalog.commit(delete=[1]))


async def _check_other_client_sees_commits(first: Catalog, second: Catalog) -> None:
    entry = CatalogEntry(await first.allocate_vid(), "vm")
    await first.commit(put=[entry])
    assert await second.lookup("vm") == entry, "another client misses a commit"
    assert await second.allocate_vid() > entry.vid, "another client reuses a vid"
    await second.commit(delete=[entry.vid])
    assert await first.entries() == []


async def _check_concurrent_vids_never_collide(first: Catalog, second: Catalog) -> None:
    calls = [client.allocate_vid() for _ in range(8) for client in (first, second)]
    vids = await asyncio.gather(*calls)
    assert len(set(vids)) == len(vids), f"two clients got the same vid: {sorted(vids)}"


async def _check_concurrent_commits(first: Catalog, second: Catalog) -> None:
    async def create(client: Catalog, name: str) -> bool:
        entry = CatalogEntry(await client.allocate_vid(), name)
        try:
            await client.commit(put=[entry])
        except VolumeExists:
            return False
        return True

    own = [create(client, f"{i}-{index}") for i, client in enumerate((first, second))
           for index in range(4)]  # fmt: skip
    both = [create(client, f"both-{index}") for index in range(4) for client in (first, second)]
    results = await asyncio.gather(*own, *both)
    assert all(results[: len(own)]), "a commit of a free name failed"
    assert sum(results[len(own) :]) == 4, "a name was taken by both clients, or by neither"
    names = [entry.spec for entry in await first.entries()]
    assert len(names) == len(own) + 4 and len(set(names)) == len(names), names
    assert await second.entries() == await first.entries()
