"""Wire-level helpers for the `ovis serve` tests: a blocking client too rude for NbdClient.

`RawClient` talks to a real server over a plain socket.  The polite parts
(greeting, options, GO) are driven by the sans-IO `ClientHandshake` or by
hand-built option bytes; transmission uses `ClientTransmission`, which lets
any command, flag, offset or length through, so tests can send what a real
client never would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

from ovis.nbd import (
    NEED_DATA,
    ClientHandshake,
    ClientTransmission,
    Command,
    Connected,
    DataChunk,
    ErrorChunk,
    HoleChunk,
    Request,
    SimpleReply,
)
from ovis.nbd._constants import IHAVEOPT, OPTION_REPLY_MAGIC
from ovis.nbd._events import Reply, _NeedData
from ovis.nbd.client import NbdClient
from tests.conftest import Served

PATTERN = bytes(range(256)) * 16  # the first 4 KiB of conftest.make_image's pattern


def address(uri: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(uri)
    assert parts.hostname is not None and parts.port is not None, uri
    return parts.hostname, parts.port


def option(code: int, data: bytes = b"") -> bytes:
    return struct.pack(">QII", IHAVEOPT, code, len(data)) + data


def name_and_infos(name: str, infos: Iterable[int] = ()) -> bytes:
    raw, wanted = name.encode(), tuple(infos)
    return (
        struct.pack(">I", len(raw)) + raw + struct.pack(f">H{len(wanted)}H", len(wanted), *wanted)
    )


class Result:
    """Everything the server answered to one request."""

    def __init__(self) -> None:
        self.error = 0
        self.data = bytearray()
        self.replies: list[Reply] = []


class RawClient:
    """One blocking connection to an NBD server."""

    def __init__(self, sock: socket.socket, *, timeout: float = 10.0) -> None:
        self.sock = sock
        sock.settimeout(timeout)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tx: ClientTransmission | None = None
        self.connected: Connected | None = None
        self._cookies = iter(range(1, 1 << 62))
        self.results: dict[int, Result] = {}  # by cookie, complete or not
        self._done: set[int] = set()

    @classmethod
    def to(cls, served: Served, *, timeout: float = 10.0) -> RawClient:
        return cls(
            socket.create_connection(address(served.uri()), timeout=timeout), timeout=timeout
        )

    # -- bytes ---------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(min(n - len(out), 1 << 20))
            if not chunk:
                raise ConnectionError(f"server closed after {len(out)} of {n} bytes")
            out += chunk
        return bytes(out)

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True once the server has closed (EOF or reset), discarding anything else it sent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        """Close with SO_LINGER 0: the kernel sends RST and drops unsent data."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    # -- handshake -----------------------------------------------------------
    def greeting(self) -> int:
        """Read the server's greeting; its handshake flags."""
        magic, ihaveopt, flags = struct.unpack(">QQH", self.recv_exact(18))
        assert (magic, ihaveopt) == (0x4E42444D41474943, IHAVEOPT)
        return int(flags)

    def start_options(self, client_flags: int = 3) -> None:
        """Greeting in, client flags out (FIXED_NEWSTYLE | NO_ZEROES by default)."""
        self.greeting()
        self.send(struct.pack(">I", client_flags))

    def option_reply(self, expect_option: int) -> tuple[int, bytes]:
        """(reply type, data) of the next option reply, which must echo `expect_option`."""
        magic, echoed, kind, length = struct.unpack(">QIII", self.recv_exact(20))
        assert magic == OPTION_REPLY_MAGIC, hex(magic)
        assert echoed == expect_option, (echoed, expect_option)
        return kind, self.recv_exact(length) if length else b""

    def option_replies(self, expect_option: int) -> list[tuple[int, bytes]]:
        """Replies up to and including the final one (ACK or an error)."""
        replies = []
        while True:
            kind, data = self.option_reply(expect_option)
            replies.append((kind, data))
            if kind == 1 or kind & (1 << 31):
                return replies

    def handshake(
        self,
        export: str = "",
        *,
        structured: bool = True,
        meta_contexts: tuple[str, ...] = ("base:allocation",),
    ) -> Connected:
        """A polite negotiation up to transmission, by the sans-IO ClientHandshake."""
        hs = ClientHandshake(export, structured=structured, meta_contexts=meta_contexts)
        while True:
            event = hs.next_event()
            self.send(hs.data_to_send())
            if event is NEED_DATA:
                hs.receive_data(self.sock.recv(65536))
                continue
            assert isinstance(event, Connected), event
            self.connected = event
            self.tx = ClientTransmission(structured=event.structured)
            return event

    # -- transmission ----------------------------------------------------------
    def request(
        self,
        command: int,
        offset: int = 0,
        length: int = 0,
        flags: int = 0,
        data: bytes | None = None,
    ) -> Request:
        """Send one request (however wrong) and return it; the reply is read later."""
        assert self.tx is not None, "handshake first"
        req = Request(command, next(self._cookies), offset, length, flags, data)
        self.send(b"".join(self.tx.send(req)))
        return req

    def replies(self, cookies: Iterable[int]) -> dict[int, Result]:
        """Read replies until every cookie's reply is complete."""
        want = set(cookies)
        while not want <= self._done:
            self._next_reply()
        return {cookie: self.results[cookie] for cookie in want}

    def replies_until_closed(self) -> dict[int, Result]:
        """Every complete reply the server sent before it closed the connection."""
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                self._next_reply()
        return {cookie: self.results[cookie] for cookie in self._done}

    def _next_reply(self) -> None:
        assert self.tx is not None, "handshake first"
        event = self.tx.next_event()
        while isinstance(event, _NeedData):
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            self.tx.receive_data(data)
            event = self.tx.next_event()
        result = self.results.setdefault(event.cookie, Result())
        result.replies.append(event)
        if isinstance(event, SimpleReply | ErrorChunk):
            result.error = result.error or event.error
        if isinstance(event, DataChunk | SimpleReply) and event.data is not None:
            result.data += event.data
        elif isinstance(event, HoleChunk):
            result.data += bytes(event.length)
        if isinstance(event, SimpleReply) or event.done:
            self._done.add(event.cookie)

    def call(
        self,
        command: int,
        offset: int = 0,
        length: int = 0,
        flags: int = 0,
        data: bytes | None = None,
    ) -> Result:
        """One request and its complete reply."""
        req = self.request(command, offset, length, flags, data)
        return self.replies([req.cookie])[req.cookie]

    def disconnect(self) -> None:
        assert self.tx is not None
        self.send(b"".join(self.tx.send(Request(Command.DISC, next(self._cookies)))))
        self.close()


@contextlib.contextmanager
def raw_client(served: Served, *, timeout: float = 10.0) -> Iterator[RawClient]:
    client = RawClient.to(served, timeout=timeout)
    try:
        yield client
    finally:
        client.close()


def connected(
    served: Served,
    export: str = "",
    *,
    structured: bool = True,
    meta_contexts: tuple[str, ...] = ("base:allocation",),
) -> RawClient:
    """A RawClient in transmission with `export` (closed again if negotiation fails)."""
    client = RawClient.to(served)
    try:
        client.handshake(export, structured=structured, meta_contexts=meta_contexts)
    except BaseException:
        client.close()
        raise
    return client


def assert_serving(served: Served, export: str = "", expect: bytes = PATTERN) -> None:
    """A second, well-behaved client can still connect and read the first 4 KiB."""
    assert served.proc.poll() is None, f"server died: {served.output()}"

    async def check() -> bytes:
        client = await NbdClient.connect(served.uri(export))
        try:
            return await client.read(0, len(expect))
        finally:
            await client.aclose()

    assert asyncio.run(asyncio.wait_for(check(), 10)) == expect


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wait_for_log(served: Served, text: str, timeout: float = 10) -> None:
    """Wait until the server has logged `text` (signals are handled asynchronously)."""
    deadline = time.monotonic() + timeout
    while text not in served.output():
        assert time.monotonic() < deadline, f"never logged {text!r}:\n{served.output()}"
        time.sleep(0.05)


def no_tracebacks(served: Served) -> None:
    log = served.output()
    assert "Traceback" not in log, log
