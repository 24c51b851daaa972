"""Helpers for the migration tests: real NBD servers, and devices that count or crash."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from ovis.block import BlockDevice, Extent, Filter, MemoryDevice
from ovis.block._device import Buffer, Capabilities
from tests.conftest import need

KiB = 1024
MiB = 1024 * KiB


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(proc: subprocess.Popen[bytes], port: int, what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} did not start listening on {port}")


@contextlib.contextmanager
def external_server(
    kind: str, image: Path | None = None, *extra: str, params: tuple[str, ...] = ()
) -> Iterator[str]:
    """A qemu-nbd (on `image`) or nbdkit (memory 64M, then `params`) on loopback.

    Yields its URI; the server is stopped by its own PID when the block exits.
    """
    port = free_port()
    if kind == "qemu-nbd":
        need("qemu-nbd")
        assert image is not None
        cmd = [
            "qemu-nbd",
            "-f",
            "raw",
            "-x",
            "disk",
            "-e",
            "8",
            "-t",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            *extra,
            str(image),
        ]
    else:
        need("nbdkit")
        cmd = [
            "nbdkit",
            "-f",
            "--exit-with-parent",
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            *extra,
            "memory",
            "64M",
            *params,
        ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(proc, port, kind)
        yield f"nbd://127.0.0.1:{port}/disk"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pattern(length: int, seed: int) -> bytes:
    """Reproducible bytes without zeros, so they never pass for a hole."""
    return random.Random(seed).randbytes(length).replace(b"\0", b"\x01")


async def memory_with(size: int, chunks: list[tuple[int, bytes]]) -> MemoryDevice:
    device = MemoryDevice(size)
    for offset, data in chunks:
        await device.write(offset, data)
    return device


async def read_all(device: BlockDevice, chunk: int = MiB) -> bytes:
    out = bytearray()
    for pos in range(0, device.size, chunk):
        out += await device.read(pos, min(chunk, device.size - pos))
    return bytes(out)


async def sha256_of(device: BlockDevice) -> str:
    return hashlib.sha256(await read_all(device)).hexdigest()


class Counting(Filter):
    """Counts what reaches `next`: calls per operation and bytes read or written."""

    def __init__(self, next: BlockDevice) -> None:
        super().__init__(next)
        self.calls: dict[str, int] = {}
        self.read_bytes = 0
        self.written: list[tuple[int, int]] = []  # (offset, length) of writes, zeros, trims
        self.read_ranges: list[tuple[int, int]] = []
        self.data_written = 0  # bytes of write requests (not zero or trim)

    def _count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1

    async def read(self, offset: int, length: int) -> Buffer:
        self._count("read")
        self.read_bytes += length
        self.read_ranges.append((offset, length))
        return await self.next.read(offset, length)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        self._count("write")
        self.written.append((offset, len(memoryview(data).cast("B"))))
        self.data_written += len(memoryview(data).cast("B"))
        await self.next.write(offset, data, fua=fua)

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        self._count("zero")
        self.written.append((offset, length))
        await self.next.zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        self._count("trim")
        self.written.append((offset, length))
        await self.next.trim(offset, length, fua=fua)

    async def extents(self, offset: int, length: int) -> list[Extent]:
        self._count("extents")
        return await self.next.extents(offset, length)

    async def aclose(self) -> None:
        self._count("aclose")
        await self.next.aclose()


class CrashCache(BlockDevice):
    """A cache disk that loses everything not flushed when it "crashes".

    It starts full of 0xEE garbage, as a cache file holding blocks whose
    bitmap bits never reached the disk would.  `durable` is what survived;
    `crash()` returns a new CrashCache holding only that.
    """

    GARBAGE = 0xEE

    def __init__(self, size: int, durable: bytes | None = None) -> None:
        self._size = size
        self.durable = bytearray(durable if durable is not None else bytes([self.GARBAGE]) * size)
        self.volatile = bytearray(self.durable)
        self.yield_in_flush = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(can_trim=True, can_zero=True)

    async def read(self, offset: int, length: int) -> Buffer:
        return bytes(self.volatile[offset : offset + length])

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        view = memoryview(data).cast("B")
        self.volatile[offset : offset + len(view)] = view
        if fua:
            await self.flush()

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        self.volatile[offset : offset + length] = bytes(length)
        if fua:
            await self.flush()

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        await self.zero(offset, length, fua=fua)

    async def flush(self) -> None:
        snapshot = bytes(self.volatile)  # what the fdatasync covers: writes done by now
        if self.yield_in_flush:
            for _ in range(5):  # let other requests run while the "disk" syncs
                await asyncio.sleep(0)
        self.durable[:] = snapshot

    def crash(self) -> CrashCache:
        return CrashCache(self._size, bytes(self.durable))
