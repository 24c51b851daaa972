"""MemoryObjectStore: objects in a dict, with a crash you can simulate.

A first-class test backend, as nbdkit's memory plugin is: it keeps the state
each object had at its last `sync` beside its current state, and `crash()`
returns the store a restarted node would find.  That lets the volume layer's
tests stop "the machine" between any two store calls and check that no
metadata points at data that did not survive.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Collection

from ovis.block._device import Buffer

from ._interface import (
    ObjectNotFound,
    ObjectStat,
    ObjectStore,
    StaleVersion,
    StoreClosed,
    check_oid,
    check_range,
    check_version,
)


@dataclasses.dataclass(slots=True)
class _Object:
    data: bytearray
    version: int

    def copy(self) -> _Object:
        return _Object(bytearray(self.data), self.version)


class MemoryObjectStore(ObjectStore):
    """An ObjectStore in memory; `crash()` models losing everything not synced."""

    def __init__(self) -> None:
        self._objects: dict[int, _Object] = {}
        self._durable: dict[int, _Object] = {}
        self._unsynced: set[int] = set()
        self._closed = False

    def crash(self, rng: random.Random | None = None) -> MemoryObjectStore:
        """The store a node finds after a crash now.

        Each object mutated since its last sync comes back, independently, as
        it was at that sync or as it is now (the contract allows either);
        `rng` picks, and without one every such object reverts.
        """
        survivor = MemoryObjectStore()
        for oid in set(self._durable) | set(self._objects):
            keep_new = oid in self._unsynced and rng is not None and rng.random() < 0.5
            state = self._objects if keep_new or oid not in self._unsynced else self._durable
            if oid in state:
                survivor._objects[oid] = state[oid].copy()
        survivor._durable = {oid: obj.copy() for oid, obj in survivor._objects.items()}
        return survivor

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed()

    def _get(self, oid: int) -> _Object:
        check_oid(oid)
        self._check_open()
        try:
            return self._objects[oid]
        except KeyError:
            raise ObjectNotFound(oid) from None

    async def read(self, oid: int, offset: int, length: int) -> Buffer:
        check_range(offset, length)
        data = self._get(oid).data[offset : offset + length]
        return bytes(data) + bytes(length - len(data))

    async def write(self, oid: int, offset: int, data: Buffer, version: int) -> None:
        payload = bytes(data)
        check_range(offset, len(payload))
        check_version(version)
        obj = self._get(oid)
        if version < obj.version:
            raise StaleVersion(oid, version, obj.version)
        if len(obj.data) < offset + len(payload):
            obj.data.extend(bytes(offset + len(payload) - len(obj.data)))
        obj.data[offset : offset + len(payload)] = payload
        obj.version = version
        self._unsynced.add(oid)

    async def create_and_write(self, oid: int, data: Buffer, version: int) -> None:
        payload = bytearray(data)
        check_oid(oid)
        check_range(0, len(payload))
        check_version(version)
        self._check_open()
        old = self._objects.get(oid)
        if old is not None and version < old.version:
            raise StaleVersion(oid, version, old.version)
        self._objects[oid] = _Object(payload, version)
        self._unsynced.add(oid)

    async def remove(self, oid: int) -> None:
        check_oid(oid)
        self._check_open()
        if self._objects.pop(oid, None) is not None:
            self._unsynced.add(oid)

    async def stat(self, oid: int) -> ObjectStat:
        obj = self._get(oid)
        return ObjectStat(obj.version, len(obj.data))

    async def list(self) -> list[int]:
        self._check_open()
        return sorted(self._objects)

    async def sync(self, oids: Collection[int] | None = None) -> None:
        self._check_open()
        for oid in list(self._unsynced if oids is None else self._unsynced & set(oids)):
            self._unsynced.discard(oid)
            obj = self._objects.get(oid)
            if obj is None:
                self._durable.pop(oid, None)
            else:
                self._durable[oid] = obj.copy()

    async def aclose(self) -> None:
        if not self._closed:
            await self.sync()
            self._closed = True
