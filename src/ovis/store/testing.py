"""Test tools for object stores: the conformance suite and a fault injector.

`check_object_store(factory)` is what `ovis.block.testing.check_block_device`
is for devices: every ObjectStore (local, memory, and the replicated store to
come) must pass it, so the volume layer can sit on any of them unchanged.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection

from ovis._testing import expect_raises
from ovis.block._device import BlockError, Buffer
from ovis.nbd._constants import Errno

from ._interface import (
    MAX_OBJECT_SIZE,
    MAX_VERSION,
    ObjectNotFound,
    ObjectStat,
    ObjectStore,
    StaleVersion,
    StoreClosed,
)

Factory = Callable[[], Awaitable[ObjectStore]]
Reopen = Callable[[ObjectStore], Awaitable[ObjectStore]]
_Check = Callable[[ObjectStore], Awaitable[None]]
KiB = 1024


async def check_object_store(factory: Factory, *, reopen: Reopen | None = None) -> None:
    """Run every check on a fresh, empty store from `factory`; AssertionError on failure.

    With `reopen` (given a store the suite has closed, return a new store over
    the same storage), also check that synced objects survive a restart.
    """
    checks: list[_Check] = [
        _check_missing,
        _check_create_and_read,
        _check_write,
        _check_versions,
        _check_create_replaces,
        _check_remove_and_list,
        _check_bad_arguments,
        _check_concurrent_writes,
        _check_sparse_data,
        _check_largest_offset,
        _check_close,
    ]
    for check in checks:
        store = await factory()
        try:
            await check(store)
        finally:
            await store.aclose()
    if reopen is not None:
        await _check_restart(await factory(), reopen)


def _pattern(length: int, seed: int) -> bytes:
    """Reproducible bytes with no zero byte, so they never pass for a hole."""
    return random.Random(seed).randbytes(length).replace(b"\0", b"\x01")


async def _expect_content(store: ObjectStore, oid: int, expected: bytes, what: str) -> None:
    got = bytes(await store.read(oid, 0, len(expected)))
    if got != expected:
        at = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        raise AssertionError(f"{what}: object {oid:#x} differs first at byte {at}")


async def _check_missing(store: ObjectStore) -> None:
    assert await store.list() == [], "a new store is not empty"
    assert not await store.exists(7), "exists() is true for a missing object"
    await expect_raises(ObjectNotFound, "stat(missing)", store.stat(7))
    await expect_raises(ObjectNotFound, "version(missing)", store.version(7))
    await expect_raises(ObjectNotFound, "read(missing)", store.read(7, 0, 10))
    await expect_raises(ObjectNotFound, "write(missing)", store.write(7, 0, b"x", 1))
    await store.remove(7)
    await store.sync([7])
    assert await store.list() == [], "write() to a missing object created it"


async def _check_create_and_read(store: ObjectStore) -> None:
    data = _pattern(200 * KiB + 3, 1)
    await store.create_and_write(1, data, 5)
    assert await store.stat(1) == ObjectStat(5, len(data)), await store.stat(1)
    assert await store.version(1) == 5
    assert await store.exists(1)
    await _expect_content(store, 1, data, "after create_and_write")
    for offset, length in [(0, 1), (65535, 2), (100_000, 70_000), (len(data) - 1, 1), (5, 0)]:
        got = bytes(await store.read(1, offset, length))
        assert got == data[offset : offset + length], f"read({offset}, {length}) is wrong"
    tail = bytes(await store.read(1, len(data) - 10, 1000))
    assert tail == data[-10:] + bytes(990), "a read past the object's length is not zeros"
    assert bytes(await store.read(1, 10 * 1024 * KiB, 100)) == bytes(100), "far read not zeros"
    assert await store.list() == [1]


async def _check_write(store: ObjectStore) -> None:
    model = bytearray(_pattern(100 * KiB, 2))
    await store.create_and_write(2, model, 1)
    version = 1
    for seed, (offset, length) in enumerate(
        [(0, 1), (65530, 20), (64 * KiB, 64 * KiB), (99 * KiB, 5 * KiB), (300 * KiB, 7)]
    ):
        data = _pattern(length, 10 + seed)
        version += 1
        await store.write(2, offset, data, version)
        model.extend(bytes(max(0, offset + length - len(model))))
        model[offset : offset + length] = data
        await _expect_content(store, 2, bytes(model), f"after write({offset}, {length})")
        assert await store.stat(2) == ObjectStat(version, len(model)), await store.stat(2)
    await store.write(2, 0, memoryview(b"mv"), version)
    assert bytes(await store.read(2, 0, 2)) == b"mv", "a memoryview write was lost"
    await store.sync([2])
    await store.sync()
    await _expect_content(store, 2, b"mv" + bytes(model[2:]), "after sync")


async def _check_versions(store: ObjectStore) -> None:
    await store.create_and_write(3, b"a" * 100, 10)
    await expect_raises(StaleVersion, "write with an older version", store.write(3, 0, b"b", 9))
    await expect_raises(StaleVersion, "create_and_write older", store.create_and_write(3, b"c", 9))
    assert bytes(await store.read(3, 0, 100)) == b"a" * 100, "a refused mutation changed data"
    assert await store.version(3) == 10, "a refused mutation changed the version"
    await store.write(3, 0, b"d", 10)  # a retry with the same version is accepted
    await store.write(3, 1, b"e", MAX_VERSION)
    assert await store.version(3) == MAX_VERSION
    assert bytes(await store.read(3, 0, 3)) == b"dea"


async def _check_create_replaces(store: ObjectStore) -> None:
    await store.create_and_write(4, _pattern(150 * KiB, 3), 1)
    await store.create_and_write(4, b"short", 2)
    assert await store.stat(4) == ObjectStat(2, 5), await store.stat(4)
    got = bytes(await store.read(4, 0, 150 * KiB))
    assert got == b"short" + bytes(150 * KiB - 5), "create_and_write left old bytes behind"
    await store.create_and_write(5, b"", 1)
    assert await store.stat(5) == ObjectStat(1, 0), "an empty object is not empty"


async def _check_remove_and_list(store: ObjectStore) -> None:
    oids = [0, 1, 1 << 32, (1 << 63) | (5 << 32) | 9, MAX_VERSION]
    for oid in reversed(oids):
        await store.create_and_write(oid, oid.to_bytes(8, "little"), 3)
    assert await store.list() == oids, f"list() gave {await store.list()}"
    await store.remove(1 << 32)
    await store.remove(1 << 32)
    assert await store.list() == [o for o in oids if o != 1 << 32]
    await expect_raises(ObjectNotFound, "read(removed)", store.read(1 << 32, 0, 8))
    await store.create_and_write(1 << 32, b"again", 1)  # removed means forgotten
    assert bytes(await store.read(1 << 32, 0, 5)) == b"again"
    await store.sync()
    assert await store.list() == oids


async def _check_bad_arguments(store: ObjectStore) -> None:
    await store.create_and_write(6, b"x", 1)
    bad: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("read at -1", lambda: store.read(6, -1, 1)),
        ("read past MAX_OBJECT_SIZE", lambda: store.read(6, MAX_OBJECT_SIZE, 1)),
        ("write past MAX_OBJECT_SIZE", lambda: store.write(6, MAX_OBJECT_SIZE - 1, b"ab", 2)),
        ("write version -1", lambda: store.write(6, 0, b"a", -1)),
        ("write version 2**64", lambda: store.write(6, 0, b"a", MAX_VERSION + 1)),
        ("create too large", lambda: store.create_and_write(6, bytes(MAX_OBJECT_SIZE + 1), 2)),
        ("read oid -1", lambda: store.read(-1, 0, 1)),
    ]
    for what, call in bad:
        await expect_raises(ValueError, what, call())
    assert bytes(await store.read(6, 0, 2)) == b"x\0", "a refused call changed data"


async def _check_concurrent_writes(store: ObjectStore) -> None:
    await store.create_and_write(7, b"", 1)
    pieces = {offset: _pattern(3000, offset) for offset in range(0, 600_000, 20_000)}
    await asyncio.gather(
        *(store.write(7, offset, data, 2) for offset, data in pieces.items()),
        *(store.create_and_write(100 + n, _pattern(5000, n), 1) for n in range(20)),
    )
    for offset, data in pieces.items():
        assert bytes(await store.read(7, offset, 3000)) == data, f"write at {offset} was lost"
    for n in range(20):
        await _expect_content(store, 100 + n, _pattern(5000, n), "concurrent create")


async def _check_sparse_data(store: ObjectStore) -> None:
    data = bytes(64 * KiB) + _pattern(10, 4) + bytes(200 * KiB) + _pattern(64 * KiB, 5)
    await store.create_and_write(8, data, 1)
    await _expect_content(store, 8, data, "an object with zero runs")
    await store.create_and_write(9, bytes(300 * KiB), 1)
    assert await store.stat(9) == ObjectStat(1, 300 * KiB), "zeros did not count as length"
    await store.write(9, 128 * KiB, bytes(10), 2)
    assert bytes(await store.read(9, 0, 300 * KiB)) == bytes(300 * KiB)


async def _check_largest_offset(store: ObjectStore) -> None:
    await store.create_and_write(10, b"", 1)
    await store.write(10, MAX_OBJECT_SIZE - 10, b"0123456789", 2)
    assert bytes(await store.read(10, MAX_OBJECT_SIZE - 12, 12)) == b"\0\x000123456789"
    assert (await store.stat(10)).length == MAX_OBJECT_SIZE


async def _check_close(store: ObjectStore) -> None:
    await store.create_and_write(11, b"x", 1)
    await store.aclose()
    await store.aclose()
    await expect_raises(StoreClosed, "read after aclose", store.read(11, 0, 1))
    await expect_raises(StoreClosed, "create after aclose", store.create_and_write(12, b"x", 1))
    await expect_raises(StoreClosed, "list after aclose", store.list())


async def _check_restart(store: ObjectStore, reopen: Reopen) -> None:
    await store.create_and_write(20, _pattern(150 * KiB, 6), 4)
    await store.write(20, 70 * KiB, b"new", 5)
    await store.create_and_write(21, b"gone", 1)
    await store.sync()
    await store.remove(21)
    await store.aclose()
    store = await reopen(store)
    try:
        assert await store.list() == [20], f"after restart: {await store.list()}"
        assert await store.stat(20) == ObjectStat(5, 150 * KiB), await store.stat(20)
        expected = bytearray(_pattern(150 * KiB, 6))
        expected[70 * KiB : 70 * KiB + 3] = b"new"
        await _expect_content(store, 20, bytes(expected), "after restart")
    finally:
        await store.aclose()


class FailingStore(ObjectStore):
    """Wrap a store so that it dies at one call, as a crashing node would.

    Mutating calls (write, create_and_write, remove, sync) are counted from 0;
    call number `fail_at` and every call after it, of any kind, raise
    BlockError(EIO) without reaching `inner`.  `fail_at=None` never fails.
    """

    def __init__(self, inner: ObjectStore, fail_at: int | None = None) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.mutations = 0
        self.dead = False

    def _step(self, mutating: bool) -> None:
        if mutating and not self.dead:
            self.dead = self.mutations == self.fail_at
            self.mutations += 1
        if self.dead:
            raise BlockError(Errno.EIO, "simulated crash")

    async def read(self, oid: int, offset: int, length: int) -> Buffer:
        self._step(False)
        return await self.inner.read(oid, offset, length)

    async def write(self, oid: int, offset: int, data: Buffer, version: int) -> None:
        self._step(True)
        await self.inner.write(oid, offset, data, version)

    async def create_and_write(self, oid: int, data: Buffer, version: int) -> None:
        self._step(True)
        await self.inner.create_and_write(oid, data, version)

    async def remove(self, oid: int) -> None:
        self._step(True)
        await self.inner.remove(oid)

    async def stat(self, oid: int) -> ObjectStat:
        self._step(False)
        return await self.inner.stat(oid)

    async def list(self) -> list[int]:
        self._step(False)
        return await self.inner.list()

    async def sync(self, oids: Collection[int] | None = None) -> None:
        self._step(True)
        await self.inner.sync(oids)

    async def aclose(self) -> None:
        """Close the wrapper only: the inner store's fate is the test's to decide."""
        self.dead = True
