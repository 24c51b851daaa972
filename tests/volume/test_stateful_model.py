"""Random sequences of volume operations agree with a model: bytes per volume.

The model is a dict from spec (`name` or `name@tag`) to the bytes it holds.
Every operation is applied to both; after each step every volume and
snapshot must read back exactly as modelled, and every object an inode
names must exist.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ovis.store import MemoryObjectStore
from ovis.volume import DataBeyondSize, ObjectVolume, VolumeCatalog, VolumeLibrary

from .helpers import check_references, pattern

OBJECT = 4096
SECTOR = 512
NAMES = st.sampled_from(["a", "b", "c"])
TAGS = st.sampled_from(["t1", "t2", "t3"])
SECTORS = st.integers(1, 6 * OBJECT // SECTOR)


class VolumeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.tmp = tempfile.TemporaryDirectory()
        self.store = MemoryObjectStore()
        self.library = VolumeLibrary(self.store, self.catalog())
        self.model: dict[str, bytearray] = {}
        self.open: dict[str, ObjectVolume] = {}  # working volumes left open between steps

    def catalog(self) -> VolumeCatalog:
        return VolumeCatalog(Path(self.tmp.name) / "catalog.sqlite", fsync=False)

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    def teardown(self) -> None:
        try:
            self.run(self.library.aclose())
        finally:
            self.runner.close()
            self.tmp.cleanup()

    # -- helpers -------------------------------------------------------------

    def working(self, name: str) -> bool:
        return name in self.model

    def snapshots(self, name: str) -> list[str]:
        return sorted(spec for spec in self.model if spec.startswith(name + "@"))

    async def device(self, spec: str) -> tuple[ObjectVolume, bool]:
        """The volume to use, and whether to close it afterwards."""
        if spec in self.open:
            return self.open[spec], False
        return await self.library.open(spec), True

    def clamp(self, name: str, offset: int, length: int) -> tuple[int, int]:
        size = len(self.model[name])
        offset = min(offset, size - 1)
        return offset, max(1, min(length, size - offset))

    async def close(self, name: str) -> None:
        if name in self.open:
            await self.open.pop(name).aclose()

    # -- rules -----------------------------------------------------------------

    @initialize(name=NAMES, sectors=SECTORS)
    def first_volume(self, name: str, sectors: int) -> None:
        self.create(name, sectors)

    @rule(name=NAMES, sectors=SECTORS)
    def create(self, name: str, sectors: int) -> None:
        if self.working(name):
            return
        self.run(self.library.create(name, sectors * SECTOR, object_size=OBJECT))
        self.model[name] = bytearray(sectors * SECTOR)

    @rule(
        name=NAMES,
        offset=st.integers(0, 30_000),
        length=st.integers(1, 9000),
        seed=st.integers(0, 255),
        fua=st.booleans(),
    )
    def write(self, name: str, offset: int, length: int, seed: int, fua: bool) -> None:
        if not self.working(name):
            return
        offset, length = self.clamp(name, offset, length)
        data = pattern(length, seed)
        self.run(self._io(name, lambda v: v.write(offset, data, fua=fua)))
        self.model[name][offset : offset + length] = data

    @rule(name=NAMES, offset=st.integers(0, 30_000), length=st.integers(1, 9000))
    def zero(self, name: str, offset: int, length: int) -> None:
        if not self.working(name):
            return
        offset, length = self.clamp(name, offset, length)
        self.run(self._io(name, lambda v: v.zero(offset, length)))
        self.model[name][offset : offset + length] = bytes(length)

    @rule(name=NAMES, offset=st.integers(0, 30_000), length=st.integers(1, 9000))
    def trim(self, name: str, offset: int, length: int) -> None:
        if not self.working(name):
            return
        offset, length = self.clamp(name, offset, length)
        got = bytes(self.run(self._io(name, lambda v: self._trim_and_read(v, offset, length))))
        old = self.model[name][offset : offset + length]
        assert all(g in (0, o) for g, o in zip(got, old, strict=True)), "trim invented bytes"
        self.model[name][offset : offset + length] = got

    async def _trim_and_read(self, volume: ObjectVolume, offset: int, length: int) -> Any:
        await volume.trim(offset, length)
        return await volume.read(offset, length)

    async def _io(self, spec: str, call: Any) -> Any:
        volume, close = await self.device(spec)
        try:
            return await call(volume)
        finally:
            if close:
                await volume.aclose()

    @rule(name=NAMES)
    def toggle_open(self, name: str) -> None:
        if name in self.open:
            self.run(self.close(name))
        elif self.working(name):
            self.open[name] = self.run(self.library.open(name))

    @rule(name=NAMES, tag=TAGS)
    def snapshot(self, name: str, tag: str) -> None:
        spec = f"{name}@{tag}"
        if not self.working(name) or spec in self.model:
            return
        self.run(self.library.snapshot(name, tag))
        self.model[spec] = bytearray(self.model[name])

    @rule(data=st.data(), new=NAMES)
    def clone(self, data: st.DataObject, new: str) -> None:
        snaps = [spec for spec in self.model if "@" in spec]
        if not snaps or self.working(new):
            return
        source = data.draw(st.sampled_from(sorted(snaps)))
        self.run(self.library.clone(source, new))
        self.model[new] = bytearray(self.model[source])

    @rule(data=st.data(), name=NAMES)
    def rollback(self, data: st.DataObject, name: str) -> None:
        if not self.working(name) or not self.snapshots(name):
            return
        spec = data.draw(st.sampled_from(self.snapshots(name)))
        self.run(self.close(name))
        self.run(self.library.rollback(name, spec.partition("@")[2]))
        self.model[name] = bytearray(self.model[spec])

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        if not self.model:
            return
        spec = data.draw(st.sampled_from(sorted(self.model)))
        name = spec.partition("@")[0]
        self.run(self.close(name))
        self.run(self.library.delete(spec))
        doomed = [spec] if "@" in spec else [name, *self.snapshots(name)]
        for gone in doomed:
            del self.model[gone]

    @rule(name=NAMES, sectors=SECTORS, force=st.booleans())
    def resize(self, name: str, sectors: int, force: bool) -> None:
        if not self.working(name):
            return
        size, old = sectors * SECTOR, self.model[name]
        if size < len(old):
            self.run(self.close(name))
            if not force and any(old[size:]):
                with pytest.raises(DataBeyondSize):
                    self.run(self.library.resize(name, size))
                return
        self.run(self.library.resize(name, size, force=force))
        self.model[name] = old[:size] + bytes(max(0, size - len(old)))

    @rule()
    def restart(self) -> None:
        """Close everything, then reopen the library on what the store made durable."""
        self.open.clear()
        self.run(self.library.aclose())
        self.store = self.store.crash()
        self.library = VolumeLibrary(self.store, self.catalog())

    @precondition(lambda self: not self.open)
    @rule()
    def gc(self) -> None:
        self.run(self.library.gc())
        named = self.run(check_references(self.library))
        assert set(self.run(self.store.list())) == named, "gc left garbage"

    # -- invariants --------------------------------------------------------------

    @invariant()
    def every_volume_reads_as_modelled(self) -> None:
        for spec, expected in self.model.items():
            got = self.run(self._io(spec, lambda v: v.read(0, v.size)))
            assert bytes(got) == expected, f"{spec} differs from the model"

    @invariant()
    def listing_matches_the_model(self) -> None:
        infos = self.run(self.library.list())
        assert sorted(i.spec for i in infos) == sorted(self.model)
        for info in infos:
            assert info.size == len(self.model[info.spec])
            assert 0 <= info.used_bytes + info.shared_bytes <= info.size
            if not info.snapshot:
                assert info.snapshot_count == len(self.snapshots(info.name))

    @invariant()
    def no_metadata_points_at_missing_data(self) -> None:
        self.run(check_references(self.library))


VolumeMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_volume_operations_agree_with_the_model = VolumeMachine.TestCase
