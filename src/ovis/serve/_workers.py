"""Worker processes: spread the transmission phase of many connections over cores.

One Python process serves NBD on one core.  With `--workers N`, the main
process still listens, negotiates every handshake, answers LIST and the
control socket, and keeps TLS connections and shared-overlay exports; every
other connection is handed, once negotiated, to a worker process over a unix
SOCK_SEQPACKET pair (the socket itself travels as SCM_RIGHTS).  Each worker
opens the export's image itself: all processes share the page cache, and an
fdatasync in any of them flushes the file, so CAN_MULTI_CONN stays true.

Messages are one JSON object per datagram.  main → worker:
    {"op": "connect", "spec": {...}, "ready": {...}, "trailing": hex}  + fd
    {"op": "hold", "name": N, "id": I}   drain and hold writes to export N
    {"op": "release", "id": I}
    {"op": "drain"}                       finish requests, flush, exit
worker → main:
    {"op": "held", "id": I}   {"op": "closed"}   (a handed connection ended)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

from ovis.nbd._catalog import ExportInfo
from ovis.nbd._handshake_server import Ready
from ovis.nbd.server import ServerLimits

from ._spec import ExportSpec

log = logging.getLogger("ovis.serve")
MAX_MESSAGE = 256 * 1024


def ready_to_dict(ready: Ready) -> dict[str, Any]:
    e = ready.export
    return {
        "export": [
            e.name,
            e.size,
            int(e.flags),
            e.description,
            e.min_block,
            e.preferred_block,
            e.max_block,
            list(e.meta_contexts),
        ],
        "structured": ready.structured,
        "extended": ready.extended,
        "contexts": {str(k): v for k, v in ready.meta_contexts.items()},
    }


def ready_from_dict(raw: dict[str, Any]) -> Ready:
    name, size, flags, description, min_b, pref_b, max_b, contexts = raw["export"]
    export = ExportInfo(name, size, flags, description, min_b, pref_b, max_b, tuple(contexts))
    meta = {int(k): v for k, v in raw["contexts"].items()}
    return Ready(export, raw["structured"], raw["extended"], meta, False)


class _Worker:
    def __init__(self, number: int, limits: ServerLimits) -> None:
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ, OVIS_WORKER_LIMITS=json.dumps(limits_to_dict(limits)))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ovis.serve._worker_main", str(theirs.fileno()), str(number)],
            pass_fds=[theirs.fileno()],
            env=env,
        )
        theirs.close()
        self.channel.setblocking(False)
        self.connections = 0

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        if fds:
            socket.send_fds(self.channel, [data], fds)
        else:
            self.channel.send(data)


def limits_to_dict(limits: ServerLimits) -> dict[str, Any]:
    return {
        "max_connections": limits.max_connections,
        "idle_timeout": limits.idle_timeout,
        "handshake_timeout": limits.handshake_timeout,
        "max_requests": limits.max_requests,
        "max_buffer": limits.max_buffer,
    }


class WorkerPool:
    """The main process's side: hand connections over, coordinate snapshots."""

    def __init__(self, count: int, limits: ServerLimits) -> None:
        self.count = count
        self.limits = limits
        self.workers: list[_Worker] = []
        self._held: dict[int, asyncio.Future[None]] = {}
        self._ids = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for number in range(self.count):
            worker = _Worker(number, self.limits)
            self.workers.append(worker)
            loop.add_reader(worker.channel, self._receive, worker)

    @property
    def handed_connections(self) -> int:
        return sum(w.connections for w in self.workers)

    def hand_over(
        self, sock: socket.socket, spec: ExportSpec, ready: Ready, trailing: bytes
    ) -> bool:
        """Give a negotiated connection to the least busy worker; False to keep it."""
        alive = [w for w in self.workers if w.proc.poll() is None]
        if not alive or spec.shared_state:
            return False  # a shared overlay or proxy cache lives in this process only
        worker = min(alive, key=lambda w: w.connections)
        message = {
            "op": "connect",
            "spec": spec.to_dict(),
            "ready": ready_to_dict(ready),
            "trailing": trailing.hex(),
        }
        try:
            worker.send(message, [sock.fileno()])
        except OSError as exc:
            log.warning("cannot hand a connection to worker %d: %s", worker.proc.pid, exc)
            return False
        worker.connections += 1
        return True

    def _receive(self, worker: _Worker) -> None:
        try:
            data = worker.channel.recv(MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(worker.channel)
            worker.connections = 0
            log.warning("worker %d exited", worker.proc.pid)
            for future in self._held.values():
                if not future.done():
                    future.set_result(None)  # a dead worker writes nothing more
            return
        message = json.loads(data)
        if message["op"] == "closed":
            worker.connections = max(0, worker.connections - 1)
        elif message["op"] == "held":
            pending = self._held.get(message["id"])
            if pending is not None and not pending.done():
                pending.set_result(None)

    @contextlib.asynccontextmanager
    async def held(self, name: str) -> AsyncIterator[None]:
        """Drain and hold writes to export `name` in every worker."""
        loop = asyncio.get_running_loop()
        waits, ids = [], []
        for worker in self.workers:
            if worker.proc.poll() is not None:
                continue
            self._ids += 1
            future: asyncio.Future[None] = loop.create_future()
            self._held[self._ids] = future
            ids.append((worker, self._ids))
            worker.send({"op": "hold", "name": name, "id": self._ids})
            waits.append(future)
        try:
            await asyncio.gather(*waits)
            yield
        finally:
            for worker, hold_id in ids:
                self._held.pop(hold_id, None)
                with contextlib.suppress(OSError):
                    worker.send({"op": "release", "id": hold_id})

    async def drain(self, timeout: float = 60.0) -> None:
        """Tell every worker to finish its requests and exit; wait for them."""
        loop = asyncio.get_running_loop()
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.send({"op": "drain"})
        for worker in self.workers:
            try:
                await asyncio.wait_for(loop.run_in_executor(None, worker.proc.wait), timeout)
            except TimeoutError:
                log.error("worker %d did not drain in %.0fs; killing it", worker.proc.pid, timeout)
                worker.proc.kill()
                await loop.run_in_executor(None, worker.proc.wait)
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(worker.channel)
            worker.channel.close()
