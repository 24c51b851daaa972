"""StorageService: a LocalObjectStore behind epoch, quorum and fencing checks."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from ovis.cluster._model import (
    ClusterView,
    Epoch,
    Fenced,
    NodeInfo,
    NotAccepting,
    WrongEpoch,
)
from ovis.cluster._service import MANAGEMENT_TOKEN, StorageService
from ovis.store import LocalObjectStore, ObjectNotFound

OID = 0x0000_0005_0000_0001  # volume 5, index 1
OTHER_VOLUME_OID = 0x0000_0006_0000_0001
SUB = 64 * 1024


class FixedView(ClusterView):
    """A membership that only changes when a test says so."""

    def __init__(self, number: int = 3) -> None:
        self._epoch = _epoch(number)
        self.accepting = True
        self._changed = asyncio.Event()

    @property
    def node_id(self) -> str:
        return "n0"

    @property
    def epoch(self) -> Epoch:
        return self._epoch

    def move_to(self, number: int) -> None:
        self._epoch = _epoch(number)
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_epoch(self, after: int, timeout: float | None = None) -> Epoch:
        async with asyncio.timeout(timeout):
            while self._epoch.number <= after:
                await self._changed.wait()
        return self._epoch

    def accepting_writes(self) -> bool:
        return self.accepting


def _epoch(number: int) -> Epoch:
    return Epoch(number, (NodeInfo("n0", "z0", 1.0, "127.0.0.1:1"),), copies=1)


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def wrapped() -> None:
        await main()

    asyncio.run(wrapped())


class Rig:
    """A service over a real store in a directory, closed by `aclose`."""

    def __init__(
        self, root: Path, *, fsync: bool = False, max_open: int = 256, keep_fences: bool = True
    ) -> None:
        self.root = root
        self.store = LocalObjectStore(root / "objects", fsync=fsync, max_open=max_open)
        self.view = FixedView()
        fences = root / "fences.json" if keep_fences else None
        self.service = StorageService(self.store, self.view, fences)

    @property
    def epoch(self) -> int:
        return self.view.epoch.number

    async def aclose(self) -> None:
        await self.store.aclose()


async def _rig(root: Path, **kw: object) -> Rig:
    return Rig(root, **kw)  # type: ignore[arg-type]


def test_every_operation_refuses_a_wrong_epoch_raw_or_not(tmp_path: Path) -> None:
    async def main() -> None:
        rig = await _rig(tmp_path)
        s, e = rig.service, rig.epoch
        await s.create(e, OID, b"x" * 10, 1, 0)
        stale = e - 1
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: s.read(stale, OID, 0, 1),
            lambda: s.read(stale, OID, 0, 1, raw=True),
            lambda: s.read_object(stale, OID),
            lambda: s.read_object(stale, OID, raw=True),
            lambda: s.stat(stale, OID),
            lambda: s.stat(stale, OID, raw=True),
            lambda: s.checksums(stale, OID),
            lambda: s.write(stale, OID, 0, b"y", 2, 0),
            lambda: s.create(stale, OID, b"y", 2, 0),
            lambda: s.remove(stale, OID, 0),
            lambda: s.sync(stale, None),
            lambda: s.sync(stale, [OID]),
            lambda: s.list(stale),
            lambda: s.fence(stale, 5, 7),
        ]
        for call in calls:
            with pytest.raises(WrongEpoch) as caught:
                await call()
            assert (caught.value.theirs, caught.value.ours) == (e, stale)
        rig.view.move_to(e + 1)
        with pytest.raises(WrongEpoch):
            await s.read(e, OID, 0, 1)
        assert bytes(await s.read(e + 1, OID, 0, 10)) == b"x" * 10
        assert s.fence_of(5) == 0
        await rig.aclose()

    run(main)


def test_a_node_not_accepting_writes_refuses_mutations_but_serves_reads(tmp_path: Path) -> None:
    async def main() -> None:
        rig = await _rig(tmp_path)
        s, e = rig.service, rig.epoch
        await s.create(e, OID, b"abc", 1, 0)
        rig.view.accepting = False
        for call in (
            lambda: s.write(e, OID, 0, b"z", 2, 0),
            lambda: s.create(e, OID, b"z", 2, 0),
            lambda: s.remove(e, OID, 0),
            lambda: s.fence(e, 5, 9),
        ):
            with pytest.raises(NotAccepting):
                await call()
        assert bytes(await s.read(e, OID, 0, 3)) == b"abc"
        assert await s.read_object(e, OID) == (1, b"abc")
        assert (await s.stat(e, OID)).version == 1
        assert await s.list(e) == [(OID, 1)]
        await s.sync(e, None)
        await rig.aclose()

    run(main)


def test_a_token_below_the_fence_is_refused_and_equal_or_higher_passes(tmp_path: Path) -> None:
    async def main() -> None:
        rig = await _rig(tmp_path)
        s, e = rig.service, rig.epoch
        await s.fence(e, 5, 10)
        with pytest.raises(Fenced) as caught:
            await s.create(e, OID, b"old", 1, 9)
        assert (caught.value.vid, caught.value.token, caught.value.newest) == (5, 9, 10)
        await s.create(e, OID, b"new", 1, 10)
        await s.write(e, OID, 0, b"N", 2, 11)
        with pytest.raises(Fenced):
            await s.remove(e, OID, 9)
        assert await s.read_object(e, OID) == (2, b"New")
        assert s.fence_of(5) == 10  # passing with a higher token does not raise the fence
        await rig.aclose()

    run(main)


def test_fencing_below_the_current_fence_raises_fenced(tmp_path: Path) -> None:
    async def main() -> None:
        rig = await _rig(tmp_path)
        s, e = rig.service, rig.epoch
        await s.fence(e, 5, 10)
        await s.fence(e, 5, 10)  # equal: nothing changes
        with pytest.raises(Fenced) as caught:
            await s.fence(e, 5, 4)
        assert caught.value.newest == 10
        await s.fence(e, 5, 12)
        assert s.fence_of(5) == 12
        await rig.aclose()

    run(main)


def test_fences_are_per_volume(tmp_path: Path) -> None:
    async def main() -> None:
        rig = await _rig(tmp_path)
        s, e = rig.service, rig.epoch
        await s.fence(e, 5, 10)
        await s.create(e, OTHER_VOLUME_OID, b"free", 1, 3)
        assert s.fence_of(6) == 0
        await rig.aclose()

    run(main)


def test_the_management_token_passes_every_fence_and_never_raises_one(tmp_path: Path) -> None:
    async def main() -> None:
        rig = await _rig(tmp_path)
        s, e = rig.service, rig.epoch
        await s.create(e, OID, b"mgmt", 1, MANAGEMENT_TOKEN)
        assert s.fence_of(5) == 0
        await s.create(e, OID, b"lease", 2, 0)  # the volume is still unfenced
        await s.fence(e, 5, 50)
        await s.write(e, OID, 0, b"M", 3, MANAGEMENT_TOKEN)
        await s.remove(e, OID, MANAGEMENT_TOKEN)
        assert s.fence_of(5) == 50
        with pytest.raises(ValueError):
            await s.fence(e, 5, MANAGEMENT_TOKEN)
        await rig.aclose()

    run(main)


def test_token_zero_passes_only_an_unfenced_volume(tmp_path: Path) -> None:
    async def main() -> None:
        rig = await _rig(tmp_path)
        s, e = rig.service, rig.epoch
        await s.create(e, OID, b"unleased", 1, 0)
        await s.fence(e, 5, 1)
        with pytest.raises(Fenced):
            await s.write(e, OID, 0, b"x", 2, 0)
        await rig.aclose()

    run(main)


def test_the_fence_table_survives_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        rig = await _rig(tmp_path)
        await rig.service.fence(rig.epoch, 5, 77)
        await rig.service.fence(rig.epoch, 6, 3)
        await rig.aclose()
        again = await _rig(tmp_path)
        assert again.service.fence_of(5) == 77
        assert again.service.fence_of(6) == 3
        with pytest.raises(Fenced):
            await again.service.create(again.epoch, OID, b"old writer", 1, 76)
        await again.aclose()

    run(main)


def test_an_unreadable_fence_table_stops_the_service_from_starting(tmp_path: Path) -> None:
    (tmp_path / "fences.json").write_text('{"fences": {"5": "x')
    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    try:
        with pytest.raises(ValueError, match="fence table"):
            StorageService(store, FixedView(), tmp_path / "fences.json")
    finally:
        asyncio.run(store.aclose())


def test_fence_returns_only_after_mutations_past_the_old_fence_finish(tmp_path: Path) -> None:
    async def main() -> None:
        # No fence file: fence() itself never waits, only for the write to finish.
        rig = await _rig(tmp_path, fsync=True, keep_fences=False)
        s, e = rig.service, rig.epoch
        await s.create(e, OID, bytes(SUB), 1, 0)
        # The first write after the object is opened waits for an fdatasync in a thread.
        writing = asyncio.create_task(s.write(e, OID, 0, b"late", 2, 0))
        await asyncio.sleep(0)
        assert not writing.done()
        await s.fence(e, 5, 9)
        assert writing.done() and writing.exception() is None
        with pytest.raises(Fenced):
            await s.write(e, OID, 0, b"later", 3, 0)
        await rig.aclose()

    run(main)


def test_ensure_current_runs_before_non_raw_access_and_not_for_raw(tmp_path: Path) -> None:
    async def main() -> None:
        rig = await _rig(tmp_path)
        s, e = rig.service, rig.epoch
        seen: list[int] = []

        async def ensure_current(oid: int) -> None:
            seen.append(oid)
            await asyncio.sleep(0)

        await s.create(e, OID, b"abc", 1, 0)
        s.ensure_current = ensure_current
        await s.read(e, OID, 0, 1, raw=True)
        await s.read_object(e, OID, raw=True)
        await s.stat(e, OID, raw=True)
        await s.checksums(e, OID)
        await s.list(e)
        await s.sync(e, [OID])
        assert seen == []
        await s.read(e, OID, 0, 1)
        await s.read_object(e, OID)
        await s.stat(e, OID)
        await s.write(e, OID, 0, b"x", 2, 0)
        await s.create(e, OID, b"y", 3, 0)
        await s.remove(e, OID, 0)
        assert seen == [OID] * 6
        with pytest.raises(WrongEpoch):
            await s.read(e + 1, OID, 0, 1)
        assert len(seen) == 6  # the checks come first
        await rig.aclose()

    run(main)


def test_read_object_is_consistent_under_concurrent_writes(tmp_path: Path) -> None:
    size = 4 * SUB

    async def main() -> None:
        rig = await _rig(tmp_path, fsync=True, max_open=1)
        s, e = rig.service, rig.epoch
        await s.create(e, OID, bytes([1]) * size, 1, 0)
        stop = False

        async def writer() -> None:
            for version in range(2, 60):
                fill = bytes([version]) * size
                if version % 3:
                    await s.create(e, OID, fill, version, 0)
                else:
                    await s.write(e, OID, 0, fill, version, 0)
                # another object through the one-slot cache evicts ours (a sync)
                await s.create(e, OTHER_VOLUME_OID, b"evict", version, 0)

        async def reader() -> int:
            checked = 0
            while not stop:
                version, data = await s.read_object(e, OID)
                assert data == bytes([version]) * size, version
                checked += 1
                await asyncio.sleep(0)
            return checked

        readers = [asyncio.create_task(reader()) for _ in range(3)]
        await writer()
        stop = True
        assert all(n > 0 for n in await asyncio.gather(*readers))
        await rig.aclose()

    run(main)


def test_checksums_are_the_crc_of_each_sub_block_of_the_data(tmp_path: Path) -> None:
    async def main() -> None:
        rig = await _rig(tmp_path)
        s, e = rig.service, rig.epoch
        data = bytes(range(256)) * (3 * SUB // 256) + b"tail"
        await s.create(e, OID, data, 4, 0)
        await s.write(e, OID, SUB + 5, b"changed", 5, 0)
        version, length, crcs = await s.checksums(e, OID)
        current = bytes(await s.read(e, OID, 0, length))
        padded = current + bytes(-len(current) % SUB)
        expected = [zlib.crc32(padded[i : i + SUB]) for i in range(0, len(padded), SUB)]
        assert (version, length, crcs) == (5, len(data), expected)
        with pytest.raises(ObjectNotFound):
            await s.checksums(e, OTHER_VOLUME_OID)
        await rig.aclose()

    run(main)


def test_list_gives_every_object_with_its_version(tmp_path: Path) -> None:
    async def main() -> None:
        rig = await _rig(tmp_path, max_open=2)  # most headers are read from their files
        s, e = rig.service, rig.epoch
        want = [(OID + i, 10 + i) for i in range(20)]
        for oid, version in want:
            await s.create(e, oid, b"o", version - 1, 0)
            await s.write(e, oid, 1, b"k", version, 0)
        await s.remove(e, OID + 3, 0)
        del want[3]
        assert await s.list(e) == want
        await rig.aclose()

    run(main)
