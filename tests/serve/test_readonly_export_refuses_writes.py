"""A --readonly export answers writes with EPERM and never changes the image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Command, Errno, TransmissionFlag
from tests.conftest import Served

from .helpers import PATTERN, assert_serving, connected


def test_readonly_export_refuses_writes_with_eperm(
    serve: Callable[..., Served], image: Path
) -> None:
    before = image.read_bytes()
    served = serve(str(image), "--port", "0", "--readonly")
    for structured in (False, True):
        client = connected(served, structured=structured)
        try:
            assert client.connected is not None
            assert client.connected.export.flags & TransmissionFlag.READ_ONLY
            assert client.call(Command.WRITE, 0, 4, data=b"evil").error == Errno.EPERM
            assert client.call(Command.WRITE, 4096, 4, 1, b"evil").error == Errno.EPERM  # FUA
            # TRIM and WRITE_ZEROES are not offered, but they write: EPERM all the same.
            for command in (Command.TRIM, Command.WRITE_ZEROES):
                assert client.call(command, 0, 4096).error == Errno.EPERM
            assert client.call(Command.FLUSH).error == 0
            assert client.call(Command.READ, 0, 4096).data == PATTERN
        finally:
            client.close()
    assert image.read_bytes() == before
    assert_serving(served)
