"""Past the end: reads, trims, caches and block status get EINVAL; writes and zeroes get ENOSPC."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Command, Errno
from tests.conftest import Served

from .helpers import assert_serving, connected

SIZE = 64 << 20


def test_requests_past_the_end_get_the_spec_errors(
    serve: Callable[..., Served], image: Path
) -> None:
    before = image.read_bytes()
    served = serve(str(image), "--port", "0")
    client = connected(served)
    try:
        assert client.connected is not None and client.connected.export.size == SIZE
        for offset, length in [(SIZE, 1), (SIZE - 1, 2), (SIZE + 4096, 4096), (1 << 62, 512)]:
            for command in (Command.READ, Command.TRIM, Command.CACHE, Command.BLOCK_STATUS):
                result = client.call(command, offset, length)
                assert result.error == Errno.EINVAL, (command, offset, length)
            assert client.call(Command.WRITE_ZEROES, offset, length).error == Errno.ENOSPC
            result = client.call(Command.WRITE, offset, length, data=b"z" * length)
            assert result.error == Errno.ENOSPC, (offset, length)
        # The last byte is still reachable, and the file did not grow.
        assert client.call(Command.WRITE, SIZE - 1, 1, data=b"!").error == 0
        assert client.call(Command.READ, SIZE - 1, 1).data == b"!"
    finally:
        client.close()
    after = image.read_bytes()
    assert len(after) == SIZE
    assert after[:-1] == before[:-1]
    assert_serving(served)
