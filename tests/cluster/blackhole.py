"""Blackhole: a TCP forwarder on 127.0.0.1 that can silently stop carrying bytes.

A partition without leaving loopback: a node is given the forwarder's address instead of
etcd's, and `cut()` makes every connection through it (and every new one) go silent in
both directions, as a dropped link would: nothing is reset, bytes wait in the socket
buffers, and the node's requests time out.  `heal()` lets them flow again.  The
forwarder runs its own event loop in a thread, so it keeps working while the test's
loop is blocked; `close()` stops it and closes every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Blackhole:
    """Forwards 127.0.0.1:`port` to `target` (HOST:PORT) until `cut()`."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port: int = self._call(self._start())

    def _call(self, coro: object) -> int:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _start(self) -> int:
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()
            up_reader, upstream = await asyncio.open_connection(*self._target)
            await asyncio.gather(self._pump(reader, upstream), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # cancelled by close(): ending quietly keeps asyncio's stream callback quiet
        finally:
            for side in (writer, upstream):
                if side is not None:
                    side.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await self._flowing.wait()
            data = await reader.read(65536)
            await self._flowing.wait()  # what was read during the cut waits with it
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    async def _stop(self) -> int:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.sleep(0.05)  # let the closed transports release their sockets
        return 0

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
