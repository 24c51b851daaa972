"""Who may write an export: the write gate (drain, hold, refuse) and single-writer mode.

`WriteGate` sits above each shared export.  `SingleWriter` (an export's
`single_writer` mode, for the VM live-migration handover on shared
storage) lets one client host at a time write: see its docstring and
docs/migration.md.  Each connection to such an export gets a
`WriterFilter` that asks it before every write, zero and trim.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from ovis.block._device import BlockDevice, BlockError, Buffer, Transparent
from ovis.nbd._constants import Errno

from ._spec import ExportError

log = logging.getLogger("ovis.serve")
LOCAL = "local"  # the host name of unix-socket clients


class WriteGate(Transparent):
    """Counts writes in flight and can hold new ones while a snapshot is taken.

    Once `retire()`d (the export migrated away) every write gets EPERM, so no
    write can be acknowledged on a copy that is no longer authoritative.
    """

    def __init__(self, next: BlockDevice) -> None:
        super().__init__(next)
        self.retired = False
        self._in_flight = 0
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def _enter(self) -> None:
        # Plain calls, not a context manager: this is on every write's path.
        while not self._open.is_set():
            await self._open.wait()
        if self.retired:
            raise BlockError(Errno.EPERM, "export has migrated: its source is read-only")
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Drain the writes in flight and hold new ones until the block exits."""
        self._open.clear()
        try:
            await self._idle.wait()
            await self.next.flush()
            yield
        finally:
            self._open.set()

    def retire(self) -> None:
        """Refuse every later write (call while holding the gate)."""
        self.retired = True

    def passes(self, write: bool) -> bool:
        # A write done at once, while open, is never in flight when held() looks.
        return not write or (self._open.is_set() and not self.retired)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        await self._enter()
        try:
            await self.next.write(offset, data, fua=fua)
        finally:
            self._leave()

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        await self._enter()
        try:
            await self.next.trim(offset, length, fua=fua)
        finally:
            self._leave()

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        await self._enter()
        try:
            await self.next.zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)
        finally:
            self._leave()


def host_of(peer: str | None) -> str:
    """The writer identity of a client address: its IP (v4-mapped as v4), or "local"."""
    if peer is None:
        return LOCAL
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


class SingleWriter:
    """Write permission of one export, held by one client host at a time.

    A host is a client address: all its connections share the permission,
    so multi-connection clients (qemu, nbdcopy) work.  Unix-socket clients
    are one host, "local".  The first write from any host takes the free
    permission; writes from other hosts get EPERM while it is held.  The
    holder gives it up by closing its last connection (it detached).
    `handover(to)` moves it at once: new writes from everyone get EPERM,
    writes already admitted finish, the export is flushed, and `to` holds
    it (to hand back after a failed migration, hand over to the old host).
    Without `to` the permission is left free for the first writer, except
    that the old holder may not take it back until it has detached.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.holder: str | None = None
        self.fenced: str | None = None  # released by handover, not yet detached
        self._connections: dict[str, set[WriterFilter]] = {}
        self._handing_over = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def status(self) -> dict[str, object]:
        return {
            "export": self.name,
            "writer": self.holder,
            "fenced": self.fenced,
            "hosts": {host: len(conns) for host, conns in sorted(self._connections.items())},
        }

    def join(self, conn: WriterFilter) -> None:
        self._connections.setdefault(conn.host, set()).add(conn)

    def leave(self, conn: WriterFilter) -> None:
        conns = self._connections.get(conn.host)
        if conns is None or conn not in conns:
            return
        conns.discard(conn)
        if conns:
            return
        del self._connections[conn.host]
        if self.fenced == conn.host:
            self.fenced = None
        if self.holder == conn.host:
            self.holder = None
            log.info("export %r: writer %s detached", self.name, conn.host)

    def admit(self, conn: WriterFilter) -> None:
        """Let one write from `conn` start, or raise BlockError(EPERM); never awaits."""
        if self._handing_over:
            raise BlockError(Errno.EPERM, "write permission is being handed over")
        if self.holder is None:
            if conn.host == self.fenced:
                raise BlockError(Errno.EPERM, "this host handed the export over")
            self.holder = conn.host
            log.info("export %r: %s is the writer", self.name, conn.host)
        elif self.holder != conn.host:
            raise BlockError(Errno.EPERM, f"{self.holder} is writing this export")
        self._in_flight += 1
        self._idle.clear()

    def done(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    async def handover(
        self, flush: Callable[[], Awaitable[None]], to: str | None = None
    ) -> str | None:
        """Stop the holder's writes, drain them, flush, give the permission to `to`.

        Returns the previous holder.  If the flush fails, the permission is
        left free (the old holder fenced) and the error propagates.
        """
        if self._handing_over:
            raise ExportError(f"export {self.name!r} is already being handed over")
        previous = self.holder
        self._handing_over = True
        try:
            self.holder = None
            if previous is not None and previous in self._connections:
                self.fenced = previous
            await self._idle.wait()
            await flush()
            if to is not None:
                self.holder = host_of(to)
                self.fenced = None
        finally:
            self._handing_over = False
        log.info("export %r: write permission handed from %s to %s", self.name, previous, to)
        return previous


class WriterFilter(Transparent):
    """One connection's writes to a single-writer export, admitted by `writers`."""

    def __init__(self, next: BlockDevice, writers: SingleWriter, peer: str | None) -> None:
        super().__init__(next)
        self.writers = writers
        self.host = host_of(peer)
        writers.join(self)

    def passes(self, write: bool) -> bool:
        return not write  # every write must be admitted

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        self.writers.admit(self)
        try:
            await self.next.write(offset, data, fua=fua)
        finally:
            self.writers.done()

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        self.writers.admit(self)
        try:
            await self.next.trim(offset, length, fua=fua)
        finally:
            self.writers.done()

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        self.writers.admit(self)
        try:
            await self.next.zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)
        finally:
            self.writers.done()

    async def aclose(self) -> None:
        self.writers.leave(self)
        await self.next.aclose()
