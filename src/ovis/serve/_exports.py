"""The export table of `ovis serve`: named image files, added and removed at runtime.

Each export opens its image once; every connection shares that device (so
CAN_MULTI_CONN stays true), except that a `cow` export gives each connection
its own private overlay, discarded when it disconnects (nbd-server -c,
xnbd --cow-target).  With `cow_persist` there is one overlay, shared and kept.

The shared stack, bottom up: the data (image file, persisted overlay, or a
proxy cache filling from a remote source), a `MirrorFilter` for live
migration (a pass-through until a job attaches), a `WriteGate` so that a
snapshot or a migration can drain writes and hold new ones, and a read-only
filter for read-only exports.  A `single_writer` export gives each
connection a `WriterFilter` above that, so only one client host writes at
a time (`handover` moves the permission; see _gate.SingleWriter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from ovis.block._cow import CowFilter
from ovis.block._device import BlockDevice, BlockError, Capabilities, Transparent
from ovis.block._file import FileDevice
from ovis.block._readonly import ReadOnlyFilter
from ovis.migrate import MirrorFilter, ProxyFilter, open_proxy
from ovis.nbd._catalog import ExportInfo
from ovis.nbd._constants import Reply
from ovis.nbd._dispatch import transmission_flags
from ovis.nbd._errors import ProtocolError
from ovis.nbd.client import NbdError

from ._gate import SingleWriter, WriteGate, WriterFilter
from ._migration import ExportMigration
from ._snapshot import copy_device, copy_image, snapshot_path
from ._spec import ExportError, ExportSpec

log = logging.getLogger("ovis.serve")


class _Borrowed(Transparent):
    """A handle on a shared device: closing it closes nothing below."""

    async def aclose(self) -> None:
        return None


class _Lease(Transparent):
    """A connection's handle on an export: closing it gives the export back.

    A retired (removed or replaced) export is closed when its last lease is.
    """

    def __init__(self, export: _OpenExport) -> None:
        super().__init__(export.shared)
        self._export: _OpenExport | None = export
        export.users += 1

    async def aclose(self) -> None:
        export, self._export = self._export, None
        if export is not None:
            await export.release()


class _OpenExport:
    def __init__(
        self, spec: ExportSpec, image: WriteGate, shared: BlockDevice, migration: ExportMigration
    ) -> None:
        self.spec = spec
        self.migration = migration
        self.writers = SingleWriter(spec.name) if spec.single_writer else None
        self.image = image
        self.shared = shared  # what connections see, unless each gets its own overlay
        self.capabilities: Capabilities = shared.capabilities
        self.users = 0  # connections holding a _Lease
        self.retired = False  # no longer offered: close once users drops to 0
        self.closed = False

    def info(self) -> ExportInfo:
        caps = self.capabilities
        return ExportInfo(
            self.spec.name,
            self.shared.size,
            transmission_flags(caps),
            self.spec.description,
            caps.min_block,
            caps.preferred_block,
            caps.max_block,
        )

    async def device_for_connection(self, peer: str | None) -> BlockDevice:
        if self.spec.cow and self.spec.cow_persist is None:
            return CowFilter(_Lease(self))
        if self.writers is not None:
            return WriterFilter(_Lease(self), self.writers, peer)
        return _Lease(self)

    async def release(self) -> None:
        self.users -= 1
        if self.retired and not self.users:
            await self.aclose()

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            await self.migration.aclose()
            await self.shared.aclose()


async def _open_bottom(spec: ExportSpec) -> tuple[BlockDevice, ProxyFilter | None]:
    """The device that holds the export's data: file, persisted overlay or proxy cache."""
    if spec.proxy is not None:
        assert spec.bitmap is not None
        try:
            proxy = await open_proxy(
                spec.proxy,
                spec.path,
                spec.bitmap,
                max_rate=spec.max_rate,
                auto_switch=spec.auto_switch,
            )
        except (OSError, ValueError, BlockError, ProtocolError, NbdError) as exc:
            raise ExportError(f"export {spec.name!r}: cannot proxy {spec.proxy}: {exc}") from None
        if not spec.defer_fill:
            proxy.start_fill()
        return proxy, proxy
    if not Path(spec.path).exists():
        raise ExportError(f"export {spec.name!r}: image {spec.path} does not exist")
    readonly = spec.readonly or spec.cow  # a cow export never writes its base
    try:
        file = FileDevice(spec.path, readonly=readonly, size=spec.size)
    except OSError as exc:
        raise ExportError(f"export {spec.name!r}: cannot open {spec.path}: {exc.strerror}") from exc
    if spec.cow_persist is not None:  # writes land in the overlay, never in the file
        return CowFilter(file, overlay_path=spec.cow_persist), None
    return file, None


async def _open_export(spec: ExportSpec) -> _OpenExport:
    if spec.single_writer and spec.cow and spec.cow_persist is None:
        raise ExportError(f"export {spec.name!r}: single_writer needs shared writes, not --cow")
    bottom, proxy = await _open_bottom(spec)
    mirror = MirrorFilter(bottom)
    image = WriteGate(mirror)
    shared: BlockDevice = ReadOnlyFilter(image) if spec.readonly else image
    migration = ExportMigration(spec.name, image, mirror, proxy, spec.proxy)
    opened = _OpenExport(spec, image, shared, migration)
    if spec.cow and spec.cow_persist is None:
        probe = CowFilter(_Borrowed(shared))  # learn what a per-connection overlay offers
        opened.capabilities = probe.capabilities
        await probe.aclose()
    return opened


class _Catalog:
    def __init__(self, table: ExportTable, peer: str | None) -> None:
        self.table = table
        self.peer = peer

    def lookup(self, name: str) -> ExportInfo | Reply:
        if self.table.stopping:
            return Reply.ERR_SHUTDOWN
        if not name and self.table.default is not None:
            name = self.table.default
        export = self.table.exports.get(name)
        if export is None:
            return Reply.ERR_UNKNOWN
        if not export.spec.allows(self.peer):
            return Reply.ERR_POLICY
        return export.info()

    def listing(self) -> Sequence[tuple[str, str]]:
        return [
            (name, export.spec.description)
            for name, export in self.table.exports.items()
            if export.spec.allows(self.peer)
        ]


class ExportTable:
    """The exports one server offers; implements nbd.server.ExportBackend."""

    def __init__(self, default: str | None = None) -> None:
        # Set when other processes serve these exports too (see _workers).
        self.hold_elsewhere: Callable[[str], AbstractAsyncContextManager[None]] | None = None
        self.exports: dict[str, _OpenExport] = {}
        self.default = default
        self.stopping = False
        self._retired: list[_OpenExport] = []

    async def add(self, spec: ExportSpec) -> None:
        if spec.name in self.exports:
            raise ExportError(f"export {spec.name!r} already exists")
        self.exports[spec.name] = await _open_export(spec)
        log.info("export %r serves %s", spec.name, spec.path)

    async def remove(self, name: str) -> None:
        """Stop offering `name`; clients already connected keep their device."""
        export = self.exports.pop(name, None)
        if export is None:
            raise ExportError(f"no export named {name!r}")
        if self.default == name:
            self.default = None
        await self._retire([export])
        log.info("export %r removed", name)

    async def _retire(self, exports: list[_OpenExport]) -> None:
        """No longer offered: close each now, or when its last client leaves."""
        self._retired = [e for e in self._retired if not e.closed]
        for export in exports:
            export.retired = True
            if export.users:
                self._retired.append(export)  # closed by its last lease (or at exit)
            else:
                await export.aclose()

    async def replace_all(self, specs: Sequence[ExportSpec], default: str | None) -> None:
        """Serve exactly `specs`, in their order: every change is made, or none.

        New and changed exports are opened first; if any cannot be, the table
        is left as it was.  Unchanged exports keep their open image, and
        clients of removed or changed ones keep their session.
        """
        opened: dict[str, _OpenExport] = {}
        try:
            for spec in specs:
                current = self.exports.get(spec.name)
                if current is None or current.spec != spec:
                    opened[spec.name] = await _open_export(spec)
        except BaseException:
            for export in opened.values():
                await export.aclose()
            raise
        wanted = {spec.name for spec in specs}
        retired = [e for n, e in self.exports.items() if n not in wanted or n in opened]
        self.exports = {
            spec.name: opened.get(spec.name) or self.exports[spec.name] for spec in specs
        }
        self.default = default
        await self._retire(retired)

    def specs(self) -> list[ExportSpec]:
        return [export.spec for export in self.exports.values()]

    def catalog(self, peer: str | None) -> _Catalog:
        return _Catalog(self, peer)

    async def connect(self, export: ExportInfo, peer: str | None) -> BlockDevice:
        opened = self.exports.get(export.name)
        # Replaced since the client was told about it (SIGHUP): its size or
        # flags may differ from what the client now believes.
        if opened is None or opened.info() != export:
            raise ExportError(f"export {export.name!r} went away or changed")
        return await opened.device_for_connection(peer)

    def _held_elsewhere(self, name: str) -> AbstractAsyncContextManager[None]:
        """Writes to `name` held in other processes too (worker processes)."""
        if self.hold_elsewhere is None:
            return contextlib.nullcontext()
        return self.hold_elsewhere(name)

    async def snapshot(self, name: str, dest: str | None = None) -> str:
        """A crash-consistent copy of the export's image, taken while it is served."""
        export = self.exports.get(name)
        if export is None:
            raise ExportError(f"no export named {name!r}")
        target = Path(dest) if dest else snapshot_path(Path(export.spec.path))
        if target.exists():
            raise ExportError(f"snapshot target {target} already exists")
        async with self._held_elsewhere(name), export.image.held():
            if export.spec.shared_state:  # the file alone is not what clients see
                method = await copy_device(export.shared, target)
            else:
                method = await asyncio.to_thread(copy_image, Path(export.spec.path), target)
        log.info("snapshot of %r written to %s (%s)", name, target, method)
        return str(target)

    async def handover(self, name: str, to: str | None = None) -> dict[str, object]:
        """Move `name`'s write permission (single-writer exports); see SingleWriter."""
        writers = self._writers(name)
        previous = await writers.handover(self.exports[name].shared.flush, to)
        return {**writers.status(), "previous": previous}

    def writer_status(self, name: str) -> dict[str, object]:
        return self._writers(name).status()

    def _writers(self, name: str) -> SingleWriter:
        export = self.exports.get(name)
        if export is None:
            raise ExportError(f"no export named {name!r}")
        if export.writers is None:
            raise ExportError(f"export {name!r} is not single-writer (serve it --single-writer)")
        return export.writers

    def migration(self, name: str) -> ExportMigration:
        export = self.exports.get(name)
        if export is None:
            raise ExportError(f"no export named {name!r}")
        return export.migration

    async def snapshot_all(self) -> list[str]:
        return [await self.snapshot(name) for name in list(self.exports)]

    async def aclose(self) -> None:
        self.stopping = True
        exports = [*self.exports.values(), *self._retired]
        self.exports.clear()
        self._retired.clear()
        for export in exports:
            try:
                await export.aclose()
            except Exception as exc:
                log.warning("closing export %r failed: %s", export.spec.name, exc)
