"""VolumeExports: every volume and snapshot of a library, served by name over NBD.

`name` is the working volume (read-write), `name@tag` a snapshot (read-only).
All connections to one volume share ONE open ObjectVolume: it is opened by
the first connection and closed (flushed) when the last one leaves.  That
sharing is what makes CAN_MULTI_CONN truthful: a flush on any connection
syncs what every connection wrote, because they all write into one owner
array and one set of dirty objects.

The handshake looks exports up synchronously, so the node keeps a copy of
the library's listing, refreshed after every management operation (the
node's API is the only thing that changes the library while it runs).  In
a cluster, other nodes change it too: the listing follows the catalog's
watch, and a name it does not know yet is looked for again before it is
refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from ovis._units import format_size
from ovis.block._device import BlockDevice, Capabilities, Filter
from ovis.nbd._catalog import ExportInfo, Refused
from ovis.nbd._constants import Reply, TransmissionFlag
from ovis.nbd._dispatch import transmission_flags
from ovis.store import MemoryObjectStore
from ovis.volume import Inode, ObjectVolume, VolumeInfo, VolumeLibrary

log = logging.getLogger("ovis.node")
MISS_REFRESH_INTERVAL = 0.2  # seconds between refreshes started for unknown names


class NodeError(Exception):
    """The node cannot start or do what was asked; the message is one line for users."""


def volume_capabilities(writable: bool) -> Capabilities:
    """What an ObjectVolume offers, read from one that never does I/O.

    The handshake must state the flags before any volume is opened; asking
    a throw-away instance keeps them what ObjectVolume really does.
    """
    return ObjectVolume(MemoryObjectStore(), Inode(1, "probe", 512), writable=writable).capabilities


class Attacher(Protocol):
    """Takes a volume's single-writer lease around its read-write opening (cluster mode)."""

    async def attach(self, name: str) -> Any:
        """Take the lease (raises if another node holds it); a handle for the others."""

    async def opened(self, handle: Any, volume: ObjectVolume) -> BlockDevice:
        """The volume is open under the lease: the device to serve."""

    async def detach(self, handle: Any) -> None:
        """The volume is closed: give the lease back."""

    def refusal(self, name: str) -> str | None:
        """Why `name` cannot be attached read-write here now (for the handshake), or None."""


class _SharedVolume:
    """One open volume (as served) and the number of connections using it."""

    def __init__(self, spec: str, device: BlockDevice, handle: Any = None) -> None:
        self.spec = spec
        self.device = device
        self.handle = handle
        self.users = 0


class _Lease(Filter):
    """A connection's handle on a shared volume: closing it gives the volume back."""

    def __init__(self, exports: VolumeExports, shared: _SharedVolume) -> None:
        super().__init__(shared.device)
        self._exports: VolumeExports | None = exports
        self._shared = shared

    async def aclose(self) -> None:
        exports, self._exports = self._exports, None
        if exports is not None:
            await exports.release(self._shared)


class _Catalog:
    def __init__(self, exports: VolumeExports) -> None:
        self._exports = exports

    def lookup(self, name: str) -> ExportInfo | Reply | Refused:
        if self._exports.stopping:
            return Reply.ERR_SHUTDOWN
        info = self._exports.export_info(name)
        if info is None:
            return Reply.ERR_UNKNOWN
        attacher = self._exports.attacher
        if attacher is not None and not info.flags & TransmissionFlag.READ_ONLY:
            why = None if self._exports.connections(name) else attacher.refusal(name)
            if why is not None:
                return Refused(Reply.ERR_POLICY, why)
        return info

    def listing(self) -> Sequence[tuple[str, str]]:
        return [(spec, describe(info)) for spec, info in self._exports.volumes.items()]


class _ClusterCatalog(_Catalog):
    """In a cluster other nodes create volumes too, and the listing learns of them from
    a watch, a few ms later: a name not known yet is looked for again before it is
    refused (the handshake's `Lookup`)."""

    async def refresh(self) -> None:
        await self._exports.refresh_on_miss()


def describe(info: VolumeInfo) -> str:
    """The LIST description of a volume or snapshot."""
    if info.snapshot:
        return f"snapshot of {info.name}, {format_size(info.size)}, read-only"
    return f"volume, {format_size(info.size)}"


class VolumeExports:
    """The node's ExportBackend (see ovis.nbd.server)."""

    def __init__(self, library: VolumeLibrary, attacher: Attacher | None = None) -> None:
        self.library = library
        self.attacher = attacher
        self.stopping = False
        self.volumes: dict[str, VolumeInfo] = {}  # by spec: what LIST and lookup see
        self._open: dict[str, _SharedVolume] = {}
        self._turns: dict[str, asyncio.Lock] = {}  # per spec: opening and closing take turns
        self._capabilities = {w: volume_capabilities(w) for w in (True, False)}
        self._miss_refresh: asyncio.Future[None] | None = None
        self._miss_refreshed_at = -MISS_REFRESH_INTERVAL

    async def refresh(self) -> None:
        """Re-read the library's listing; call after every management operation."""
        self.volumes = {info.spec: info for info in await self.library.list()}

    async def refresh_on_miss(self) -> None:
        """Refresh for a client asking for an unknown name.  Concurrent askers share one
        refresh, and one starts at most every MISS_REFRESH_INTERVAL seconds, so clients
        asking for names that do not exist cannot keep the node re-reading."""
        running = self._miss_refresh
        if running is None or running.done():
            if time.monotonic() - self._miss_refreshed_at < MISS_REFRESH_INTERVAL:
                return
            self._miss_refreshed_at = time.monotonic()
            running = self._miss_refresh = asyncio.ensure_future(self.refresh())
        await asyncio.shield(running)

    def connections(self, spec: str) -> int:
        shared = self._open.get(spec)
        return shared.users if shared is not None else 0

    def export_info(self, spec: str) -> ExportInfo | None:
        info = self.volumes.get(spec)
        if info is None:
            return None
        shared = self._open.get(spec)
        size = shared.device.size if shared is not None else info.size
        caps = self._capabilities[not info.snapshot]
        return ExportInfo(
            spec,
            size,
            transmission_flags(caps),
            describe(info),
            caps.min_block,
            caps.preferred_block,
            caps.max_block,
        )

    def catalog(self, peer: str | None) -> _Catalog:
        return _Catalog(self) if self.attacher is None else _ClusterCatalog(self)

    async def connect(self, export: ExportInfo, peer: str | None) -> BlockDevice:
        spec = export.name
        async with self._turn(spec):
            if self.stopping:
                raise NodeError("the node is stopping")
            shared = self._open.get(spec)
            if shared is None:
                shared = await self._open_shared(spec)
                self._open[spec] = shared
                log.info("volume %r opened", spec)
            shared.users += 1
            return _Lease(self, shared)

    async def _open_shared(self, spec: str) -> _SharedVolume:
        if self.attacher is None or "@" in spec:  # snapshots are read-only: no lease
            return _SharedVolume(spec, await self.library.open(spec))
        handle = await self.attacher.attach(spec)
        try:
            volume = await self.library.open(spec)
            try:
                return _SharedVolume(spec, await self.attacher.opened(handle, volume), handle)
            except BaseException:
                await volume.aclose()
                raise
        except BaseException:
            await self.attacher.detach(handle)
            raise

    async def _close_shared(self, shared: _SharedVolume) -> None:
        try:
            await shared.device.aclose()
        finally:
            if self.attacher is not None and shared.handle is not None:
                await self.attacher.detach(shared.handle)

    async def release(self, shared: _SharedVolume) -> None:
        """One connection fewer; the last one closes (and so flushes) the volume."""
        async with self._turn(shared.spec):
            shared.users -= 1
            if shared.users or self._open.get(shared.spec) is not shared:
                return
            del self._open[shared.spec]
            await self._close_shared(shared)
            log.info("volume %r closed", shared.spec)

    def _turn(self, spec: str) -> asyncio.Lock:
        return self._turns.setdefault(spec, asyncio.Lock())

    async def aclose(self) -> None:
        """Close what connections left open (none after a drain); idempotent."""
        self.stopping = True
        shared_volumes, self._open = list(self._open.values()), {}
        for shared in shared_volumes:
            try:
                await self._close_shared(shared)
            except Exception as exc:
                log.warning("closing volume %r failed: %s", shared.spec, exc)
