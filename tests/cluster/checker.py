"""Checker: writes verifiable 4 KiB blocks through NBD, then checks what the cluster reads back.

Each block written carries (magic, run id, block index, sequence number), filler derived
from them and a BLAKE2b checksum of the whole 4 KiB, so a read tells exactly which write it
returns, or that it is torn, misplaced or from another run.

A write is *acknowledged* once its reply came back OK and a FLUSH sent on the same
connection after that reply came back OK (a flush covers the writes completed before it).
The workload is batches of `batch` writes to distinct blocks, all in flight at once on one
connection, then one FLUSH; no block ever has two writes in flight on one connection.

Faults.  An error reply, a lost connection, or a batch (or flush) taking longer than
`op_timeout` ends the connection: it is closed (aborted if it does not close) and the
writes it had in flight have an unknown outcome.  The checker then reconnects to its
target, which `switch(uri)` changes, for up to `reconnect_timeout` seconds; a refused
handshake (the volume still attached on a node whose session has not expired) is retried.
`switch` leaves the current connection open as a *zombie*: what it had in flight may still
be applied when a frozen node wakes up, which is what fencing must stop, and replies that
arrive afterwards are counted (late_ok, late_errors).  After any fault the next batch
rewrites the blocks whose writes had an unknown outcome first, so that a late write from
an old writer shows up as stale data.

`verify(uri)` reads every block through a fresh connection and classifies it:
- ok: the last acknowledged write, or a write issued after it (it may or may not have
  landed); zeros if no write to that block was acknowledged;
- lost: zeros although a write to it was acknowledged;
- stale: a write older than the last acknowledged one (an old replica was read, or an old
  writer overwrote a newer write);
- corrupt: a bad checksum, another run's or block's data, or a sequence never issued.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import random
import struct
import time
from collections.abc import Iterable, Sequence

from ovis.nbd._errors import ProtocolError
from ovis.nbd.client import NbdClient, NbdError

__all__ = ["BLOCK", "Checker", "CheckerError", "Tally", "decode_block", "encode_block"]

BLOCK = 4096
MAGIC = b"OVISCHK1"
_HEADER = struct.Struct("<8s16sQQ")
_DIGEST = 32
_CONNECT_ERRORS = (OSError, ProtocolError, EOFError, TimeoutError, asyncio.IncompleteReadError)


def encode_block(run_id: bytes, block: int, seq: int) -> bytes:
    header = _HEADER.pack(MAGIC, run_id, block, seq)
    fill = hashlib.blake2b(header, digest_size=64).digest() * (BLOCK // 64)
    body = header + fill[: BLOCK - len(header) - _DIGEST]
    return body + hashlib.blake2b(body, digest_size=_DIGEST).digest()


def decode_block(data: bytes, run_id: bytes, block: int) -> int | str:
    """The write's sequence number (0: never written), or why the block is corrupt."""
    if not any(data):
        return 0
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.blake2b(body, digest_size=_DIGEST).digest() != digest:
        return "bad checksum (torn or foreign data)"
    magic, run, index, seq = _HEADER.unpack_from(body)
    if magic != MAGIC or run != run_id:
        return "another run's data"
    if index != block:
        return f"block {index}'s data"
    return int(seq)


class CheckerError(Exception):
    """The checker could not go on (no node accepted it in time)."""


@dataclasses.dataclass
class Tally:
    """What one verify found, with the workload's counters."""

    uri: str = ""
    blocks: int = 0
    writes: int = 0  # issued
    acked: int = 0  # flushed and acknowledged
    failed: int = 0  # error replies (may have landed on some replicas)
    unknown: int = 0  # in flight when a connection broke or was switched away
    faults_seen: int = 0  # connections ended by errors or timeouts
    reconnects: int = 0
    refused: int = 0  # connection attempts that failed (node down, volume attached elsewhere)
    late_ok: int = 0  # OK replies on a zombie connection after the switch
    late_errors: int = 0
    ok: int = 0
    newer: int = 0  # blocks holding a write issued after their last acknowledged one
    lost: int = 0
    stale: int = 0
    corrupt: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.lost == self.stale == self.corrupt == 0

    def line(self) -> str:
        return (
            f"{self.uri}: {self.blocks} blocks checked, {self.writes} writes ({self.acked} acked, "
            f"{self.failed} failed, {self.unknown} unknown), {self.faults_seen} faults seen, "
            f"{self.reconnects} reconnects, {self.refused} refused, late ok/err "
            f"{self.late_ok}/{self.late_errors}; ok {self.ok} (newer {self.newer}), "
            f"lost {self.lost}, stale {self.stale}, corrupt {self.corrupt}"
        )


@dataclasses.dataclass
class _Write:
    seq: int
    block: int
    state: str = "issued"  # issued | replied | acked | failed | unknown


class _Conn:
    def __init__(self, client: NbdClient, uri: str) -> None:
        self.client = client
        self.uri = uri
        self.zombie = False
        self.tasks: list[asyncio.Future[bool]] = []


class Checker:
    """Writes `blocks` 4 KiB blocks spread over a volume of `size` bytes; see the module doc."""

    def __init__(
        self,
        size: int,
        *,
        blocks: int = 1024,
        batch: int = 16,
        op_timeout: float = 30,
        reconnect_timeout: float = 60,
        seed: int | None = None,
    ) -> None:
        assert 0 < blocks <= size // BLOCK and batch <= blocks
        self.size = size
        self.blocks = blocks
        self.batch = batch
        self.op_timeout = op_timeout
        self.reconnect_timeout = reconnect_timeout
        self.run_id = os.urandom(16)
        self._random = random.Random(seed)
        self._writes: list[_Write] = []
        self._last_acked = [0] * blocks  # seq of each block's last acknowledged write
        self._redo: list[int] = []  # blocks whose last write's outcome is unknown
        self._target = ""
        self._switched = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._zombies: list[_Conn] = []
        self.counts = Tally()

    def offset(self, block: int) -> int:
        """Blocks are spread evenly, so every object of the volume gets some."""
        return block * (self.size // self.blocks) // BLOCK * BLOCK

    # -- the workload ------------------------------------------------------------------

    async def start(self, uri: str) -> None:
        """Connect to `uri` and write in the background until `stop()` (again after one)."""
        self._target = uri
        self._stopping = False
        conn = await self._connect()
        assert conn is not None
        self._task = asyncio.create_task(self._run(conn))

    def switch(self, uri: str) -> None:
        """Go on through `uri`; the current connection is left open, as a zombie."""
        self._target = uri
        self._switched.set()

    @property
    def acked(self) -> int:
        return self.counts.acked

    async def wait_acked(self, more: int, timeout: float = 60) -> None:
        """Wait until `more` further writes are acknowledged (raises what stopped the writer)."""
        want = self.counts.acked + more
        async with asyncio.timeout(timeout):
            while self.counts.acked < want:
                if self._task is not None and self._task.done():
                    self._task.result()
                    raise CheckerError("the writer stopped")
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Finish the current batch, close the connection (so the lease is released)."""
        self._stopping = True
        if self._task is not None:
            task, self._task = self._task, None
            await task

    async def _run(self, conn: _Conn | None) -> None:
        try:
            while not self._stopping:
                if conn is None:
                    conn = await self._connect()
                    if conn is None:
                        return
                    self.counts.reconnects += 1
                outcome = await self._batch(conn)
                if outcome == "switched":
                    conn.zombie = True
                    self._zombies.append(conn)
                    conn = None
                elif outcome == "broken":
                    self.counts.faults_seen += 1
                    await _close(conn.client, graceful=False)
                    conn = None
                    await asyncio.sleep(0.2)  # e.g. a volume still attached elsewhere
        finally:
            if conn is not None:
                await _close(conn.client, graceful=True)

    def _pick(self) -> list[int]:
        redo = list(dict.fromkeys(self._redo))
        chosen, self._redo = redo[: self.batch], redo[self.batch :]
        taken = set(chosen)
        while len(chosen) < self.batch:
            block = self._random.randrange(self.blocks)
            if block not in taken:
                taken.add(block)
                chosen.append(block)
        return chosen

    async def _batch(self, conn: _Conn) -> str:
        """One batch and its flush: "ok", "switched" or "broken"."""
        writes = [_Write(len(self._writes) + i + 1, b) for i, b in enumerate(self._pick())]
        self._writes.extend(writes)
        self.counts.writes += len(writes)
        tasks = [asyncio.ensure_future(self._write(conn, w)) for w in writes]
        conn.tasks.extend(tasks)
        outcome = await self._wait(tasks)
        if outcome == "ok" and all(t.result() for t in tasks):
            flush = asyncio.ensure_future(self._flush(conn))
            conn.tasks.append(flush)
            outcome = await self._wait([flush])
            if outcome == "ok" and flush.result():
                for w in writes:
                    w.state = "acked"
                    self._last_acked[w.block] = w.seq
                self.counts.acked += len(writes)
                return "ok"
        outcome = "broken" if outcome == "ok" else outcome
        for w in writes:
            if w.state in ("issued", "replied"):
                w.state = "unknown"
                self.counts.unknown += 1
            if w.state in ("unknown", "failed"):
                self._redo.append(w.block)
        return outcome

    async def _wait(self, tasks: Sequence[asyncio.Future[bool]]) -> str:
        """Wait for `tasks`: "ok", "switched" (switch() was called) or "timeout"."""
        switched: asyncio.Future[bool] = asyncio.ensure_future(self._switched.wait())
        try:
            async with asyncio.timeout(self.op_timeout):
                pending: set[asyncio.Future[bool]] = set(tasks)
                while pending:
                    await asyncio.wait([*pending, switched], return_when=asyncio.FIRST_COMPLETED)
                    pending = {t for t in pending if not t.done()}
                    if switched.done():
                        self._switched.clear()
                        return "switched"
            return "ok"
        except TimeoutError:
            return "timeout"
        finally:
            switched.cancel()

    async def _write(self, conn: _Conn, w: _Write) -> bool:
        try:
            await conn.client.write(self.offset(w.block), encode_block(self.run_id, w.block, w.seq))
        except NbdError as exc:
            ok, error = False, str(exc)
        except (ConnectionError, OSError):
            ok, error = False, ""
        else:
            ok, error = True, ""
        if w.state != "issued":  # the batch already gave up on it (counted as unknown)
            if conn.zombie and ok:
                self.counts.late_ok += 1
            elif conn.zombie and error:
                self.counts.late_errors += 1
        elif ok:
            w.state = "replied"
        elif error:
            w.state = "failed"
            self.counts.failed += 1
        return ok

    async def _flush(self, conn: _Conn) -> bool:
        try:
            await conn.client.flush()
        except (NbdError, ConnectionError, OSError):
            return False
        return True

    async def _connect(self) -> _Conn | None:
        """Connect to the current target, retrying until `reconnect_timeout`; None if stopping."""
        deadline = time.monotonic() + self.reconnect_timeout
        while True:
            self._switched.clear()
            uri = self._target
            try:
                async with asyncio.timeout(5):
                    return _Conn(await NbdClient.connect(uri), uri)
            except _CONNECT_ERRORS as exc:
                self.counts.refused += 1
                if self._stopping:
                    return None
                if time.monotonic() > deadline:
                    why = f"no connection to {uri} for {self.reconnect_timeout} s: {exc}"
                    raise CheckerError(why) from None
                await asyncio.sleep(0.2)

    async def aclose(self) -> None:
        """Stop writing and close every connection, zombies included."""
        with contextlib.suppress(CheckerError):
            await self.stop()
        zombies, self._zombies = self._zombies, []
        for conn in zombies:
            await _close(conn.client, graceful=True)
            await asyncio.gather(*conn.tasks, return_exceptions=True)

    # -- verification ------------------------------------------------------------------

    async def verify(self, uri: str, *, timeout: float = 60) -> Tally:
        """Read every block through `uri` (retrying a refused connection) and classify it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                    return self.classify(uri, await self._read_all(uri))
            except (*_CONNECT_ERRORS, ConnectionError, NbdError) as exc:
                # Refused, or dropped after the handshake: attached elsewhere a while longer.
                if time.monotonic() > deadline:
                    raise CheckerError(f"cannot verify through {uri}: {exc!r}") from None
                await asyncio.sleep(0.2)

    async def _read_all(self, uri: str) -> list[bytes]:
        client = await NbdClient.connect(uri)
        try:
            limit = asyncio.Semaphore(32)

            async def read(block: int) -> bytes:
                async with limit:
                    return await client.read(self.offset(block), BLOCK)

            results = await asyncio.gather(
                *(read(b) for b in range(self.blocks)), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            return [r for r in results if isinstance(r, bytes)]
        finally:
            await _close(client, graceful=True)

    def classify(self, uri: str, contents: Iterable[bytes]) -> Tally:
        tally = dataclasses.replace(self.counts, uri=uri, problems=[])
        issued: dict[int, set[int]] = {}
        for w in self._writes:
            issued.setdefault(w.block, set()).add(w.seq)
        for block, data in enumerate(contents):
            tally.blocks += 1
            last = self._last_acked[block]
            found = decode_block(data, self.run_id, block)
            if isinstance(found, str) or (found and found not in issued.get(block, ())):
                tally.corrupt += 1
                problem = found if isinstance(found, str) else f"seq {found} never written there"
            elif found == 0 and last:
                tally.lost += 1
                problem = f"zeros, but seq {last} was acknowledged"
            elif found and found < last:
                tally.stale += 1
                problem = f"seq {found}, older than the acknowledged seq {last}"
            else:
                tally.ok += 1
                tally.newer += found > last
                continue
            if len(tally.problems) < 20:
                tally.problems.append(f"block {block} @ {self.offset(block)}: {problem}")
        return tally


async def _close(client: NbdClient, *, graceful: bool) -> None:
    """Close a client; abort it if it does not close in time (a frozen server never reads)."""
    transport = client._writer.transport  # only the harness reaches in: no abort() in the API
    if not graceful:
        transport.abort()
    try:
        async with asyncio.timeout(3):
            await client.aclose()
    except TimeoutError:
        transport.abort()
        await client.aclose()
