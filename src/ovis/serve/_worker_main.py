"""A worker process of `ovis serve --workers N` (see _workers for the protocol).

Usage (by WorkerPool only): python -m ovis.serve._worker_main CHANNEL_FD NUMBER
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

from ovis.nbd.server import NbdServer, ServerLimits

from ._exports import ExportTable
from ._spec import ExportSpec
from ._workers import MAX_MESSAGE, ready_from_dict

log = logging.getLogger("ovis.serve.worker")


class Worker:
    def __init__(self, channel: socket.socket, limits: ServerLimits) -> None:
        self.channel = channel
        self.table = ExportTable()
        self.server = NbdServer(self.table, limits=limits)
        self.done = asyncio.Event()
        self._holds: dict[int, asyncio.Event] = {}
        self._opening = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.channel.send(json.dumps(message).encode())
        except OSError as exc:
            log.warning("cannot reach the main process: %s", exc)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_readable(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.channel, MAX_MESSAGE, 4)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:  # the main process is gone: finish what we have and exit
            self.done.set()
            return
        message = json.loads(data)
        op = message["op"]
        if op == "connect" and fds:
            self._spawn(self.connect(message, fds[0]))
        elif op == "hold":
            self._spawn(self.hold(message["name"], message["id"]))
        elif op == "release":
            self._holds.pop(message["id"], asyncio.Event()).set()
        elif op == "drain":
            self.done.set()

    async def _ensure_export(self, spec: ExportSpec) -> None:
        async with self._opening:
            current = self.table.exports.get(spec.name)
            if current is not None and current.spec != spec:
                await self.table.remove(spec.name)  # replaced in the main process
                current = None
            if current is None:
                await self.table.add(spec)

    async def connect(self, message: dict[str, Any], fd: int) -> None:
        sock = socket.socket(fileno=fd)
        try:
            await self._ensure_export(ExportSpec.from_dict(message["spec"]))
            ready = ready_from_dict(message["ready"])
            protocol = await self.server.adopt(sock, ready, bytes.fromhex(message["trailing"]))
        except Exception as exc:
            log.error("cannot serve a handed-over connection: %s", exc)
            sock.close()
            self.send({"op": "closed"})
            return
        await protocol.closed.wait()
        self.send({"op": "closed"})

    async def hold(self, name: str, hold_id: int) -> None:
        release = self._holds[hold_id] = asyncio.Event()
        export = self.table.exports.get(name)
        if export is None:
            self.send({"op": "held", "id": hold_id})
            await release.wait()
            return
        async with export.image.held():
            self.send({"op": "held", "id": hold_id})
            await release.wait()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.channel, self.on_readable)
        await self.done.wait()
        loop.remove_reader(self.channel)
        await self.server.drain()
        await self.table.aclose()


def main() -> None:
    fd, number = int(sys.argv[1]), sys.argv[2]
    logging.basicConfig(level=logging.WARNING, format=f"ovis worker {number}: %(message)s")
    # The main process decides when we stop (it sends "drain"); a Ctrl-C meant
    # for the whole process group must not kill requests in flight here.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    limits = ServerLimits(**json.loads(os.environ["OVIS_WORKER_LIMITS"]))
    channel = socket.socket(fileno=fd)
    channel.setblocking(False)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner:
        runner.run(Worker(channel, limits).run())


if __name__ == "__main__":
    main()
