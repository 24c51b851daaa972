"""Moving bytes for `ovis vdi import/export/diff`: sparse maps, chunks, parallel workers.

Sparse-aware in both directions: a source's holes are found without
reading them (SEEK_DATA/SEEK_HOLE on files, base:allocation block status
on NBD), and data chunks that turn out to be all zeros are treated as
holes too.  Holes cost nothing where the target already reads as zeros (a
fresh volume, a freshly truncated file, a chunk the target's block status
reports as zeros); elsewhere they get a WRITE_ZEROES.

Several NBD connections work at once (the node's volumes are multi-conn),
with two requests in flight on each.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TypeVar

import click

from ovis.nbd._constants import StateFlag
from ovis.nbd._errors import ProtocolError
from ovis.nbd.client import NbdClient, NbdError

MiB = 1024 * 1024
CHUNK = 4 * MiB  # one default-sized object: a write never straddles two
BLOCK = 64 * 1024  # zeros are looked for at this granularity inside a chunk
DEPTH = 2  # requests in flight per connection
_ZERO_BLOCK = bytes(BLOCK)
_READS_AS_ZERO = StateFlag.ZERO
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Piece:
    """A byte range of a source; `data` False means it is known to read as zeros."""

    offset: int
    length: int
    data: bool


def data_runs(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the parts of `data` that are not zeros, found BLOCK by BLOCK."""
    runs: list[tuple[int, int]] = []
    for at in range(0, len(data), BLOCK):
        block = data[at : at + BLOCK]
        if block == _ZERO_BLOCK[: len(block)]:
            continue
        end = at + len(block)
        if runs and runs[-1][1] == at:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((at, end))
    return runs


def chunks(pieces: Iterable[Piece], size: int = CHUNK) -> Iterator[Piece]:
    """Split pieces at multiples of `size`, so each chunk lies within one aligned block."""
    for piece in pieces:
        at, end = piece.offset, piece.offset + piece.length
        while at < end:
            n = min(end, (at // size + 1) * size) - at
            yield Piece(at, n, piece.data)
            at += n


# -- sources ----------------------------------------------------------------------


class FileSource:
    """A file or block device, read with pread in a thread."""

    def __init__(self, path: str) -> None:
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise click.ClickException(f"cannot open {path}: {exc.strerror}") from None
        mode = os.fstat(self.fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            os.close(self.fd)
            raise click.ClickException(f"{path} is not a file, block device or nbd:// URI")
        self.size = os.lseek(self.fd, 0, os.SEEK_END)

    async def pieces(self) -> list[Piece]:
        out: list[Piece] = []
        at = 0
        while at < self.size:
            try:
                data = os.lseek(self.fd, at, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but a hole from here on
                    out.append(Piece(at, self.size - at, False))
                    break
                return [Piece(0, self.size, True)]  # no SEEK_DATA here: read it all
            hole = min(os.lseek(self.fd, data, os.SEEK_HOLE), self.size)
            if data > at:
                out.append(Piece(at, data - at, False))
            out.append(Piece(data, hole - data, True))
            at = hole
        return out

    async def read(self, worker: int, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(os.pread, self.fd, length, offset)

    async def aclose(self) -> None:
        os.close(self.fd)


async def connect_all(uri: str, count: int) -> list[NbdClient]:
    """`count` connections to one export, with one-line errors."""
    clients: list[NbdClient] = []
    try:
        for _ in range(count):
            clients.append(await NbdClient.connect(uri))
    except (OSError, ConnectionError, NbdError, ProtocolError, ValueError) as exc:
        await close_all(clients)
        raise click.ClickException(f"cannot connect to {uri}: {exc}") from None
    except BaseException:
        await close_all(clients)
        raise
    return clients


async def close_all(clients: Iterable[NbdClient]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.aclose()


async def nbd_pieces(client: NbdClient, offset: int = 0, length: int | None = None) -> list[Piece]:
    """The export's data and zero ranges from block status (all data if it has none)."""
    end = client.size if length is None else offset + length
    if "base:allocation" not in client.meta_contexts:
        return [Piece(offset, end - offset, True)]
    out: list[Piece] = []
    at = offset
    while at < end:
        extents = await client.block_status(at, min(end - at, 1 << 30))
        if not extents:
            raise click.ClickException(f"the server sent no block status at offset {at}")
        for n, flags in extents:
            n = min(n, end - at)
            data = not flags & _READS_AS_ZERO
            if out and out[-1].data == data:
                out[-1] = Piece(out[-1].offset, out[-1].length + n, data)
            else:
                out.append(Piece(at, n, data))
            at += n
            if at >= end:
                break
    return out


class NbdSource:
    """An NBD export read over several connections."""

    def __init__(self, clients: list[NbdClient]) -> None:
        self.clients = clients
        self.size = clients[0].size

    @classmethod
    async def open(cls, uri: str, connections: int) -> NbdSource:
        return cls(await connect_all(uri, connections))

    async def pieces(self) -> list[Piece]:
        return await nbd_pieces(self.clients[0])

    async def read(self, worker: int, offset: int, length: int) -> bytes:
        return await self.clients[worker % len(self.clients)].read(offset, length)

    async def aclose(self) -> None:
        await close_all(self.clients)


# -- running the workers ----------------------------------------------------------


async def run_workers(
    work: Iterable[T], workers: int, job: Callable[[int, T], Awaitable[None]]
) -> None:
    """Call `job(worker, item)` for every item, `workers` at a time.

    The first failure stops the others and is raised as itself (not as a
    group), so commands can turn it into one line.
    """
    queue = iter(work)

    async def worker(number: int) -> None:
        for item in queue:
            await job(number, item)

    try:
        async with asyncio.TaskGroup() as group:
            for number in range(workers):
                group.create_task(worker(number))
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None


@contextlib.asynccontextmanager
async def failures(what: str) -> AsyncIterator[None]:
    """Turn transfer failures into one-line errors."""
    try:
        yield
    except (NbdError, ConnectionError, OSError, ProtocolError) as exc:
        raise click.ClickException(f"{what} failed: {exc}") from None
