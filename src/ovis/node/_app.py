"""`ovis node start`: one process serving a library's volumes over NBD, with an HTTP API.

The embedded default: a VolumeLibrary on a local data directory (SQLite
catalog and object files), so no other process is needed.  The NBD server
exports every volume by name; the management API listens on loopback only,
since it has no authentication.

Shutdown (SIGTERM/SIGINT): the API stops first, so no management call runs
during the drain; then NBD clients are drained (in-flight requests finish,
every volume is flushed and closed as its last connection goes), and the
library is closed.  The exit status is 0.  SIGHUP is ignored (logged).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from ovis.block._device import BlockError
from ovis.cluster._model import NodeInfo
from ovis.nbd.server import NbdServer, ServerLimits
from ovis.volume import VolumeError, VolumeLibrary

from ._api import make_api
from ._cluster import ClusterStack
from ._exports import NodeError, VolumeExports

log = logging.getLogger("ovis.node")
API_HOST = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class NodeOptions:
    """What `ovis node start` was asked for."""

    data_dir: Path
    bind: str = "127.0.0.1"
    port: int = 10809
    api_port: int = 10810
    unix: str | None = None
    fsync: bool = True
    limits: ServerLimits = dataclasses.field(default_factory=ServerLimits)
    # Cluster mode (ovis node start --cluster URL); None: the embedded single node.
    cluster: str | None = None
    node_id: str | None = None
    zone: str | None = None  # default: the node id (every node its own failure zone)
    weight: float = 1.0
    peer_port: int = 10811
    session_ttl: int = 5
    recovery_rate: int = 0  # bytes/s, 0: unlimited


@dataclasses.dataclass(frozen=True)
class NodeAddresses:
    """Where a started node listens, for the ready line and GET /v1/node."""

    nbd: str  # "HOST:PORT" or "unix:PATH"
    nbd_uri: str  # a template: format(name=...) gives a volume's URI
    api: str  # http://HOST:PORT


def _uri_host(bind: str, host: str) -> str:
    """The address a local client should dial for a server bound to `bind`."""
    if bind in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _listen_error(what: str, flag: str, exc: OSError) -> NodeError:
    if exc.errno == errno.EADDRINUSE:
        return NodeError(f"{what} is in use; pick another with {flag}")
    return NodeError(f"cannot listen on {what}: {exc.strerror or exc}")


class NodeApp:
    """One node: the library, the NBD server over it, and the management API."""

    def __init__(self, options: NodeOptions, on_ready: Callable[[NodeAddresses], None]) -> None:
        self.options = options
        self.on_ready = on_ready
        self.stop = asyncio.Event()

    async def run(self) -> int:
        stack = self._cluster_stack()
        try:
            library = (
                await stack.prepare(self.options.bind, self.options.peer_port)
                if stack
                else self._open_library()
            )
        except BaseException:
            if stack is not None:
                await stack.aclose()
            raise
        exports = VolumeExports(library, stack.attacher if stack else None)
        server = NbdServer(exports, limits=self.options.limits)
        runner: web.AppRunner | None = None
        try:
            if stack is None:
                await exports.refresh()
            nbd, nbd_uri = await self._listen_nbd(server)
            about: dict[str, object] = {
                "data_dir": str(self.options.data_dir.resolve()),
                "nbd": nbd,
                "nbd_uri": nbd_uri,
            }
            runner = web.AppRunner(make_api(exports, about, stack, self.stop.set), access_log=None)
            api = about["api"] = await self._listen_api(runner)
            if stack is not None:
                await self._join(stack, exports, nbd_uri, api)
                about.update(node_id=stack.node_id, peer=stack.peer_address)
            self._install_signals()
            self.on_ready(NodeAddresses(nbd, nbd_uri, api))
            await self.stop.wait()
            log.info("stopping: draining in-flight requests")
            return 0
        finally:
            if runner is not None:  # no management call runs during the drain
                await runner.cleanup()
            exports.stopping = True
            await server.drain()  # every volume is flushed and closed as its last client goes
            await exports.aclose()
            await library.aclose()
            if stack is not None:
                await stack.aclose()

    def _cluster_stack(self) -> ClusterStack | None:
        options = self.options
        if options.cluster is None:
            return None
        try:
            return ClusterStack(
                options.cluster, options.data_dir, options.node_id, fsync=options.fsync
            )
        except BlockError as exc:  # StoreInUse: another node has it
            raise NodeError(f"cannot use {options.data_dir}: {exc}") from None
        except (OSError, ValueError) as exc:
            raise NodeError(f"cannot start: {getattr(exc, 'strerror', None) or exc}") from None

    async def _join(
        self, stack: ClusterStack, exports: VolumeExports, nbd_uri: str, api: str
    ) -> None:
        options = self.options
        nbd = nbd_uri.removeprefix("nbd://").split("/", 1)[0]
        me = NodeInfo(
            id=stack.node_id,
            zone=options.zone or stack.node_id,
            weight=options.weight,
            peer=stack.peer_address,
            nbd=nbd,
            api=api,
        )
        await stack.join(
            me, exports.refresh, ttl=options.session_ttl, recovery_rate=options.recovery_rate
        )

    async def _listen_api(self, runner: web.AppRunner) -> str:
        await runner.setup()
        site = web.TCPSite(runner, API_HOST, self.options.api_port)
        try:
            await site.start()
        except OSError as exc:
            raise _listen_error(f"{API_HOST}:{self.options.api_port}", "--api-port", exc) from None
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def _open_library(self) -> VolumeLibrary:
        data = self.options.data_dir
        try:
            return VolumeLibrary.local(data, fsync=self.options.fsync)
        except BlockError as exc:  # StoreInUse: another node has it
            raise NodeError(f"cannot use {data}: {exc}") from None
        except (OSError, VolumeError) as exc:
            raise NodeError(f"cannot use {data}: {getattr(exc, 'strerror', None) or exc}") from None

    async def _listen_nbd(self, server: NbdServer) -> tuple[str, str]:
        if self.options.unix:
            path = self.options.unix
            try:
                await server.listen_unix(path)
            except OSError as exc:
                raise _listen_error(path, "--unix", exc) from None
            return f"unix:{path}", f"nbd+unix:///{{name}}?socket={path}"
        bind, port = self.options.bind, self.options.port
        try:
            sockets = await server.listen_tcp(bind, port)
        except OSError as exc:
            raise _listen_error(f"port {port} on {bind}", "--port", exc) from None
        host, actual = sockets[0].getsockname()[:2]
        where = f"[{host}]:{actual}" if ":" in host else f"{host}:{actual}"
        return where, f"nbd://{_uri_host(bind, host)}:{actual}/{{name}}"

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP: nothing to reload"))


def run(options: NodeOptions, on_ready: Callable[[NodeAddresses], None]) -> int:
    """Run the node until SIGTERM/SIGINT; the exit status."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        loop_factory = None

    async def main() -> int:
        return await NodeApp(options, on_ready).run()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())
