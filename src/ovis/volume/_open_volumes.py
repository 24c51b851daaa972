"""OpenVolumes: the devices a library has handed out, and who may have one.

At most one writable ObjectVolume per volume name exists at a time: the
serving layer shares it between connections (that is what makes multi-conn
safe), and it is the local half of "one writer per volume".  Snapshots may
be open any number of times; they are counted so that nobody deletes one
under a reader.
"""

from __future__ import annotations

import collections

from ovis.store import ObjectStore

from ._catalog import CatalogEntry
from ._errors import VolumeInUse
from ._inode import Inode
from ._object_volume import ObjectVolume


class OpenVolumes:
    """Registry of open devices, kept up to date by the devices' aclose."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._writers: dict[str, ObjectVolume] = {}
        self._readers: collections.Counter[int] = collections.Counter()

    def writer(self, name: str) -> ObjectVolume | None:
        return self._writers.get(name)

    def writers(self) -> list[ObjectVolume]:
        return list(self._writers.values())

    def live_inode(self, entry: CatalogEntry) -> Inode | None:
        """The in-memory inode of `entry` if it is open for writing (newer than the store's)."""
        volume = self._writers.get(entry.name)
        return volume.inode if volume is not None and volume.inode.vid == entry.vid else None

    def is_open(self, entry: CatalogEntry) -> bool:
        return bool(self._readers[entry.vid]) or self.live_inode(entry) is not None

    def open_reader(self, inode: Inode) -> ObjectVolume:
        self._readers[inode.vid] += 1
        return ObjectVolume(self._store, inode, writable=False, on_close=self._closed)

    def open_writer(self, inode: Inode, next_version: int) -> ObjectVolume:
        """Register the volume's one writer; `inode` must be durable (see ObjectVolume)."""
        if inode.name in self._writers:
            raise VolumeInUse(f"volume {inode.name!r} is already open")
        volume = ObjectVolume(
            self._store, inode, writable=True, next_version=next_version, on_close=self._closed
        )
        self._writers[inode.name] = volume
        return volume

    def _closed(self, volume: ObjectVolume) -> None:
        name, vid = volume.inode.name, volume.inode.vid
        if self._writers.get(name) is volume:
            del self._writers[name]
        elif self._readers[vid] > 1:
            self._readers[vid] -= 1
        else:
            self._readers.pop(vid, None)
