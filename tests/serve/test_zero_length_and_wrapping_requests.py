"""Zero-length requests and ranges whose end wraps past 2**64 get EINVAL; the session goes on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.nbd import Command, Errno
from tests.conftest import Served

from .helpers import PATTERN, assert_serving, connected

U64 = (1 << 64) - 1
CASES = [
    (Command.READ, 0, 0),
    (Command.TRIM, 4096, 0),
    (Command.WRITE_ZEROES, 4096, 0),
    (Command.CACHE, 0, 0),
    (Command.BLOCK_STATUS, 0, 0),
    (Command.READ, U64, 1),
    (Command.READ, U64 - 511, 4096),  # offset + length = 2**64 + 3584
    (Command.READ, 1 << 63, 1 << 31),
    (Command.TRIM, U64 - 100, 4096),
    (Command.WRITE_ZEROES, U64 - 100, 4096),
    (Command.CACHE, U64, 0xFFFF_FFFF),
    (Command.BLOCK_STATUS, U64 - 10, 4096),
]


@pytest.mark.parametrize("structured", [False, True], ids=["simple", "structured"])
def test_zero_length_and_wrapping_requests_get_einval(
    serve: Callable[..., Served], image: Path, structured: bool
) -> None:
    before = image.read_bytes()
    served = serve(str(image), "--port", "0")
    client = connected(served, structured=structured)
    try:
        for command, offset, length in CASES:
            if command == Command.BLOCK_STATUS and not structured:
                continue
            result = client.call(command, offset, length)
            assert result.error == Errno.EINVAL, (command, offset, length, result.replies)
            assert not result.data
        # A zero-length write, and a write whose range wraps: refused, nothing written.
        assert client.call(Command.WRITE, 0, 0, data=b"").error == Errno.EINVAL
        wrap = client.call(Command.WRITE, U64 - 1, 4, data=b"wrap")
        assert wrap.error in (Errno.EINVAL, Errno.ENOSPC)
        assert client.call(Command.READ, 0, 4096).data == PATTERN
    finally:
        client.close()
    assert image.read_bytes() == before
    assert_serving(served)
