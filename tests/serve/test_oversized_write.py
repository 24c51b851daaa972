"""A WRITE over 32 MiB is refused with EINVAL once its payload is skipped, without buffering it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Command, CommandFlag, Errno
from tests.conftest import Served

from .helpers import PATTERN, assert_serving, connected, rss_kib

MiB = 1 << 20


def test_oversized_write_gets_einval_and_the_session_goes_on(
    serve: Callable[..., Served], image: Path
) -> None:
    before = image.read_bytes()
    served = serve(str(image), "--port", "0")
    rss_before = rss_kib(served.proc.pid)
    client = connected(served)
    try:
        payload = b"\xee" * (40 * MiB)
        for _ in range(2):
            result = client.call(Command.WRITE, 0, len(payload), data=payload)
            assert result.error == Errno.EINVAL
            # In step after the skipped payload: the next request is parsed as a request.
            assert client.call(Command.READ, 0, 4096).data == PATTERN
        grown = rss_kib(served.proc.pid) - rss_before
        assert grown < 32 * 1024, f"server grew {grown} KiB for refused payloads"
        # A READ that large carries no payload: refused at once (EOVERFLOW with DF).
        assert client.call(Command.READ, 0, 33 * MiB).error == Errno.EINVAL
        assert client.call(Command.READ, 0, 33 * MiB, CommandFlag.DF).error == Errno.EOVERFLOW
        # 32 MiB itself is allowed.
        ok = b"\x11" * (32 * MiB)
        assert client.call(Command.WRITE, 0, len(ok), data=ok).error == 0
    finally:
        client.close()
    assert image.read_bytes()[32 * MiB :] == before[32 * MiB :]
    assert_serving(served, expect=b"\x11" * 4096)
