"""IOGate: I/O runs concurrently until a management operation needs it stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class IOGate:
    """Many `io()` sections at once, or one `exclusive()` section and no I/O.

    A snapshot of an open volume needs this: no write may land in the old
    vid's objects once its inode is frozen.  `exclusive()` stops new I/O at
    the gate and waits for what is in flight, so it waits at most as long as
    the slowest request.
    """

    def __init__(self) -> None:
        self._active = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._passable = asyncio.Event()
        self._passable.set()
        self._exclusive = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def io(self) -> AsyncIterator[None]:
        while not self._passable.is_set():
            await self._passable.wait()
        self._active += 1
        self._drained.clear()
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._drained.set()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._exclusive:
            self._passable.clear()
            try:
                await self._drained.wait()
                yield
            finally:
                self._passable.set()
