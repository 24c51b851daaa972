"""Replies on their way to the client: batched writes, and reads sent with sendfile.

Replies finished in one event-loop iteration go out together, with one
writev (uvloop's `writelines`), so that 32 small replies cost one syscall.

A READ reply whose bytes sit in a file (a `FileSlice`) is sent zero-copy:
its header with MSG_MORE, then sendfile(2) from the page cache straight to
the socket.  Neither pread into a Python buffer nor the copy of that buffer
into the socket happens; the profile of 1 MiB reads was 89% those two
copies.  This writes to the socket beside the transport, so it is done only
while the transport holds nothing unsent: then our bytes cannot overtake
queued ones.  Whatever the socket does not take at once is read with pread
and handed to the transport, which then keeps the order and the
back-pressure (pause_writing) as usual.

Not under TLS (the bytes must pass through the encryption) and not without a
socket (inetd over a pipe): there the slice is read with pread and batched
like any reply.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket

from ovis.block._fileio import pread_full

from ._events import Buffer

log = logging.getLogger("ovis.nbd")
FLUSH_AT = 256 * 1024  # reply bytes coalesced before they must go to the transport


@dataclasses.dataclass(frozen=True, slots=True)
class FileSlice:
    """`length` bytes of the file `fd` at `offset`: a READ payload not read yet."""

    fd: int
    offset: int
    length: int


class ReplyWriter:
    """Writes one connection's replies to its transport, in the order given."""

    def __init__(self, transport: asyncio.Transport, *, zero_copy: bool) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._out: list[Buffer] = []
        self._bytes = 0  # past FLUSH_AT the batch goes out at once
        self._scheduled = False
        self._sock: socket.socket | None = None
        if zero_copy:
            self._sock = _own_handle(transport)

    @property
    def zero_copy(self) -> bool:
        return self._sock is not None

    def add(self, buffers: list[Buffer]) -> None:
        """Queue one reply; it goes out with the rest of this iteration's."""
        self._out += buffers
        self._bytes += sum(map(len, buffers))
        # Eager requests finish inside one pump loop: hand big batches to the
        # transport now, so that pause_writing() can stop us reading requests.
        if self._bytes >= FLUSH_AT:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def add_file(self, head: bytes, data: FileSlice) -> None:
        """Queue a reply whose payload is read from a file: sent now, zero-copy if it can be.

        Its header is already promised, so a file that fails to read now
        (an I/O error) cannot get an error reply: the connection is dropped.
        """
        try:
            self._add_file(head, data)
        except OSError as exc:
            log.error("cannot read a reply's data from the image, disconnecting: %s", exc)
            self._transport.abort()

    def _add_file(self, head: bytes, data: FileSlice) -> None:
        sock, transport = self._sock, self._transport
        if sock is None or transport.is_closing() or transport.get_write_buffer_size():
            self.add([head, _read(data)])
            return
        out, self._out = [*self._out, head], []
        self._bytes = 0
        total = sum(map(len, out))
        try:
            sent = sock.sendmsg(out, (), socket.MSG_MORE)
        except OSError:  # full (EAGAIN), or broken: then the transport finds out and reports it
            sent = 0
        if sent < total:
            transport.writelines(_after(out, sent))
            transport.write(_read(data))
            return
        offset, left = data.offset, data.length
        while left:
            try:
                n = os.sendfile(sock.fileno(), data.fd, offset, left)
            except OSError:  # as above: full, or broken
                break
            if not n:  # the file ends early: the rest reads as zeros
                break
            offset += n
            left -= n
        if left:
            transport.write(_read(FileSlice(data.fd, offset, left)))

    def flush(self) -> None:
        """Write every queued reply with one writev."""
        self._scheduled = False
        out, self._out = self._out, []
        self._bytes = 0
        transport = self._transport
        if out and not transport.is_closing():
            transport.writelines(out)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _own_handle(transport: asyncio.Transport) -> socket.socket | None:
    """A duplicate of the transport's socket for sendmsg/sendfile, or None."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return None
    try:
        mine = socket.socket(fileno=os.dup(sock.fileno()))
    except OSError as exc:
        log.warning("sending replies without sendfile: %s", exc)
        return None
    mine.setblocking(False)
    return mine


def _read(data: FileSlice) -> bytes:
    return pread_full(data.fd, data.length, data.offset)


def _after(buffers: list[Buffer], sent: int) -> list[Buffer]:
    """What is left of `buffers` once the first `sent` bytes went out."""
    for i, buf in enumerate(buffers):
        if sent < len(buf):
            return [memoryview(buf)[sent:], *buffers[i + 1 :]]
        sent -= len(buf)
    return []
