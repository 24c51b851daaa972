"""The asyncio NBD server: listeners, limits, and the backend that supplies exports.

Each connection (see _connection) goes handshake → attach (the backend opens
a device for the chosen export) → transmission → release.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Protocol

from ovis.block._device import BlockDevice

from ._catalog import ExportCatalog, ExportInfo
from ._connection import Connection
from ._handshake_server import Ready, TLSMode

log = logging.getLogger("ovis.nbd")
MiB = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class ServerLimits:
    max_connections: int = 512
    idle_timeout: float | None = None  # seconds with nothing in flight
    handshake_timeout: float = 30.0  # slowloris clients are cut off here
    max_requests: int = 128  # requests in progress per connection
    max_buffer: int = 64 * MiB  # READ/WRITE bytes in progress per connection


class ExportBackend(Protocol):
    """What the server serves; the serve and node layers implement it."""

    def catalog(self, peer: str | None) -> ExportCatalog:
        """The exports visible to a client at address `peer` (None: unix socket)."""
        ...

    async def connect(self, export: ExportInfo, peer: str | None) -> BlockDevice:
        """A device for one connection to `export`; its aclose() releases it."""
        ...


class NbdServer:
    def __init__(
        self,
        backend: ExportBackend,
        *,
        limits: ServerLimits | None = None,
        tls: ssl.SSLContext | None = None,
        tls_mode: TLSMode = TLSMode.OFF,
    ) -> None:
        if tls_mode is not TLSMode.OFF and tls is None:
            raise ValueError("TLS mode needs a TLS context")
        self.backend = backend
        self.limits = limits or ServerLimits()
        self.tls = tls
        self.tls_mode = tls_mode
        self.connections: set[Connection] = set()
        # Called when a handshake ends; returning True means another process
        # took the socket over (see ovis.serve._workers) and we let it go.
        self.handoff: Callable[[socket.socket, Ready, bytes], bool] | None = None
        self.external_connections: Callable[[], int] = lambda: 0  # counted elsewhere
        self._servers: list[asyncio.Server] = []
        self._closing = False

    def _protocol(self) -> Connection:
        return Connection(self)

    async def listen_tcp(self, host: str | None, port: int) -> list[socket.socket]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self._protocol, host, port, reuse_address=True)
        self._servers.append(server)
        return list(server.sockets)

    async def listen_unix(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        self._servers.append(await loop.create_unix_server(self._protocol, path))

    async def listen_socket(self, sock: socket.socket) -> None:
        """Serve on an already-listening socket (systemd socket activation)."""
        loop = asyncio.get_running_loop()
        if sock.family == socket.AF_UNIX:
            server = await loop.create_unix_server(self._protocol, sock=sock)
        else:
            server = await loop.create_server(self._protocol, sock=sock)
        self._servers.append(server)

    async def serve_connected(self, sock: socket.socket) -> None:
        """Serve one already-connected socket (inetd mode) until it closes."""
        loop = asyncio.get_running_loop()
        _, protocol = await loop.connect_accepted_socket(self._protocol, sock)
        await protocol.closed.wait()

    async def adopt(self, sock: socket.socket, ready: Ready, trailing: bytes) -> Connection:
        """Serve a socket whose handshake another process finished (`ready`)."""
        loop = asyncio.get_running_loop()
        _, protocol = await loop.connect_accepted_socket(
            lambda: Connection(self, adopted=(ready, trailing)), sock
        )
        return protocol

    async def drain(self) -> None:
        """Stop accepting, let in-flight requests finish, flush, close every client."""
        self._closing = True
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        await asyncio.gather(*(c.drain() for c in list(self.connections)))
