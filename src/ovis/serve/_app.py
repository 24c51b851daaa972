"""`ovis serve`: build the export table and the NBD server, then run until SIGTERM.

Signals: SIGTERM/SIGINT drain in-flight requests, flush and exit 0; SIGHUP
reloads the config file (exports added, removed or replaced; clients of
untouched exports keep going); SIGUSR1 snapshots every export (as xnbd).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from ovis.nbd._handshake_server import Ready, TLSMode
from ovis.nbd.server import NbdServer, ServerLimits

from ._config import load_config
from ._control import ControlServer
from ._exports import ExportTable
from ._spec import ExportSpec
from ._tls import server_context
from ._workers import WorkerPool

log = logging.getLogger("ovis.serve")


class ServeError(Exception):
    """ovis serve cannot start; the message is one line that says how to fix it."""


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    exports: tuple[ExportSpec, ...]
    default: str | None = None
    config: str | None = None
    bind: str = "127.0.0.1"
    port: int = 10809
    unix: str | None = None
    control: Path | None = None
    inetd: bool = False
    tls_mode: TLSMode = TLSMode.OFF
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    limits: ServerLimits = dataclasses.field(default_factory=ServerLimits)
    workers: int = 0  # processes serving negotiated connections; 0: all in this one


def systemd_sockets() -> list[socket.socket]:
    """Sockets passed by systemd socket activation (LISTEN_FDS), if any are for us."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return [socket.socket(fileno=3 + i) for i in range(count)]


class ServeApp:
    def __init__(self, options: ServeOptions, on_ready: Callable[[str], None]) -> None:
        self.options = options
        self.on_ready = on_ready
        self.table = ExportTable(options.default)
        self.stop = asyncio.Event()
        tls = None
        if options.tls_mode is not TLSMode.OFF:
            if not (options.tls_cert and options.tls_key):
                raise ServeError("--tls needs --tls-cert and --tls-key")
            tls = server_context(options.tls_cert, options.tls_key, options.tls_ca)
        self.server = NbdServer(
            self.table, limits=options.limits, tls=tls, tls_mode=options.tls_mode
        )
        self.control: ControlServer | None = None
        self.pool: WorkerPool | None = None
        self._reloading = asyncio.Lock()

    async def run(self) -> int:
        try:
            for spec in self.options.exports:
                await self.table.add(spec)
            if self.options.inetd:
                await self.server.serve_connected(socket.socket(fileno=0))
                return 0
            where = await self._listen()
            if self.options.workers:
                self._start_workers()
            if self.options.control is not None:
                self.control = ControlServer(self.table, self.options.control)
                await self.control.start()
            self._install_signals()
            self.on_ready(where)
            await self.stop.wait()
            log.info("stopping: draining in-flight requests")
            await self.server.drain()
            if self.pool is not None:
                await self.pool.drain()
            return 0
        finally:
            if self.control is not None:
                await self.control.aclose()
            await self.table.aclose()

    def _start_workers(self) -> None:
        pool = self.pool = WorkerPool(self.options.workers, self.options.limits)
        pool.start()
        table = self.table

        def hand_over(sock: socket.socket, ready: Ready, trailing: bytes) -> bool:
            export = table.exports.get(ready.export.name)
            return export is not None and pool.hand_over(sock, export.spec, ready, trailing)

        self.server.handoff = hand_over
        self.server.external_connections = lambda: pool.handed_connections
        table.hold_elsewhere = pool.held

    async def _listen(self) -> str:
        passed = systemd_sockets()
        if passed:
            for sock in passed:
                await self.server.listen_socket(sock)
            return f"{len(passed)} socket(s) from systemd"
        if self.options.unix:
            try:
                await self.server.listen_unix(self.options.unix)
            except OSError as exc:
                raise ServeError(f"cannot listen on {self.options.unix}: {exc.strerror}") from None
            return f"unix:{self.options.unix}"
        bind, port = self.options.bind, self.options.port
        try:
            sockets = await self.server.listen_tcp(bind, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServeError(
                    f"port {port} on {bind} is in use; pick another with --port"
                ) from None
            raise ServeError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
        host, actual = sockets[0].getsockname()[:2]
        return f"[{host}]:{actual}" if ":" in host else f"{host}:{actual}"

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        loop.add_signal_handler(signal.SIGUSR1, lambda: self._spawn(self.table.snapshot_all()))

    def _spawn(self, coroutine: object) -> None:
        async def guarded() -> None:
            try:
                await coroutine  # type: ignore[misc]
            except Exception as exc:
                log.error("%s", exc)

        asyncio.get_running_loop().create_task(guarded())

    async def reload(self) -> None:
        """Re-read the config; changed exports are replaced, others left alone."""
        if self.options.config is None:
            log.info("SIGHUP: no config file to reload")
            return
        async with self._reloading:  # one SIGHUP at a time
            specs, default = load_config(self.options.config)
            await self.table.replace_all(specs, default)
        log.info("SIGHUP: config reloaded, %d export(s)", len(specs))


def run(options: ServeOptions, on_ready: Callable[[str], None]) -> int:
    """Run the server until it is told to stop; the exit status."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional at heart
        loop_factory = None

    async def main() -> int:
        return await ServeApp(options, on_ready).run()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())
