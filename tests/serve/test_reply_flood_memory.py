"""A client that floods pipelined requests and never reads replies cannot grow the server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.nbd import Command, Request
from tests.conftest import Served

from .helpers import RawClient, assert_serving, connected, rss_kib

MiB = 1 << 20


@pytest.mark.parametrize(
    ("length", "limit_args", "bound_mib"),
    [(4 * MiB, (), 100), (4 * MiB, ("--max-buf-size", "8M"), 40), (512, (), 40)],
    ids=["large-reads", "large-reads-small-buffer", "small-reads"],
)
def test_unread_replies_do_not_grow_the_server(
    serve: Callable[..., Served],
    image: Path,
    length: int,
    limit_args: tuple[str, ...],
    bound_mib: int,
) -> None:
    served = serve(str(image), "--port", "0", *limit_args)
    assert_serving(served)  # warm up: code paths imported, buffers allocated once
    before = rss_kib(served.proc.pid)
    client = connected(served)
    try:
        peak, asked_mib = _flood(client, served.proc.pid, length)
    finally:
        client.reset()
    grown_mib = (peak - before) / 1024
    # The limits (requests and bytes in progress per connection) bound it; without
    # them the server would hold every reply it was asked for.
    assert grown_mib < bound_mib, f"RSS grew {grown_mib:.0f} MiB; {asked_mib:.0f} MiB of reads sent"
    assert_serving(served)


def _flood(client: RawClient, pid: int, length: int) -> tuple[int, float]:
    """Pipeline READs for a few seconds, never reading a reply; the peak RSS seen."""
    assert client.tx is not None
    client.sock.setblocking(False)
    deadline = time.monotonic() + 1.2
    cookie, pending = 1, b""
    peak = 0
    while time.monotonic() < deadline:
        if not pending:
            batch = []
            for _ in range(64):
                offset = (cookie * length) % (60 * MiB)
                batch += client.tx.send(Request(Command.READ, cookie, offset, length))
                cookie += 1
            pending = b"".join(batch)
        try:
            pending = pending[client.sock.send(pending) :]
        except BlockingIOError:
            time.sleep(0.05)  # the server stopped reading: exactly what we want
        peak = max(peak, rss_kib(pid))
    return peak, (cookie - 1) * length / MiB
