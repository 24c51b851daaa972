"""Unknown commands and unknown or misplaced command flags get EINVAL; the session goes on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.nbd import Command, CommandFlag, Errno
from tests.conftest import Served

from .helpers import PATTERN, assert_serving, connected

F = CommandFlag
BAD = [
    # (command, flags, offset, length) that must each get EINVAL
    (9, 0, 0, 512),  # unknown command
    (0xFFFF, 0, 0, 0),  # unknown command, all bits
    (Command.RESIZE, 0, 1 << 20, 0),  # experimental, never offered
    (Command.READ, F.NO_HOLE, 0, 512),  # a WRITE_ZEROES flag on READ
    (Command.READ, F.REQ_ONE, 0, 512),  # a BLOCK_STATUS flag on READ
    (Command.READ, 1 << 9, 0, 512),  # an unknown flag bit
    (Command.READ, 1 << 15, 0, 512),
    (Command.FLUSH, F.NO_HOLE, 0, 0),
    (Command.TRIM, F.DF, 0, 4096),
    (Command.WRITE_ZEROES, F.DF, 0, 4096),
    (Command.CACHE, F.REQ_ONE, 0, 4096),
    (Command.BLOCK_STATUS, F.NO_HOLE, 0, 4096),
    (Command.READ, F.PAYLOAD_LEN, 0, 512),  # extended headers were not negotiated
]


@pytest.mark.parametrize("structured", [False, True], ids=["simple", "structured"])
def test_unknown_commands_and_flags_get_einval(
    serve: Callable[..., Served], image: Path, structured: bool
) -> None:
    served = serve(str(image), "--port", "0")
    client = connected(served, structured=structured)
    try:
        for command, flags, offset, length in BAD:
            result = client.call(command, offset, length, flags)
            assert result.error == Errno.EINVAL, (command, flags, result.replies)
            assert not result.data
            # The same session keeps working after each refusal.
            assert client.call(Command.READ, 0, 512).data == PATTERN[:512]
        # None of the refused requests touched the image.
        assert image.read_bytes()[:4096] == PATTERN
    finally:
        client.close()
    assert_serving(served)


def test_pipelined_bad_requests_each_get_their_own_reply(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0")
    client = connected(served)
    try:
        sent = [
            client.request(command, offset, length, flags) for command, flags, offset, length in BAD
        ]
        good = client.request(Command.READ, 0, 4096)
        results = client.replies([r.cookie for r in [*sent, good]])
        assert all(results[r.cookie].error == Errno.EINVAL for r in sent)
        assert results[good.cookie].data == PATTERN
    finally:
        client.close()
