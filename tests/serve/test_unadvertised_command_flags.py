"""DF and FAST_ZERO get EINVAL when not advertised; FUA, advertised, works on every command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Command, CommandFlag, Errno, TransmissionFlag
from tests.conftest import Served

from .helpers import PATTERN, assert_serving, connected

F, TF = CommandFlag, TransmissionFlag


def test_df_without_structured_replies_gets_einval(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0")
    client = connected(served, structured=False)
    try:
        assert client.connected is not None
        assert not client.connected.export.flags & TF.SEND_DF  # DF needs structured replies
        assert client.call(Command.READ, 0, 512, F.DF).error == Errno.EINVAL
        assert client.call(Command.READ, 0, 512).data == PATTERN[:512]
    finally:
        client.close()
    assert_serving(served)


def test_df_with_structured_replies_is_one_chunk(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--port", "0")
    client = connected(served)
    try:
        assert client.connected is not None
        assert client.connected.export.flags & TF.SEND_DF
        result = client.call(Command.READ, 0, 65536, F.DF)
        assert result.error == 0 and len(result.replies) == 1
        assert bytes(result.data[:4096]) == PATTERN
    finally:
        client.close()


def test_fast_zero_and_writes_on_a_readonly_export_get_refused(
    serve: Callable[..., Served], image: Path
) -> None:
    before = image.read_bytes()
    served = serve(str(image), "--port", "0", "--readonly")
    client = connected(served)
    try:
        assert client.connected is not None
        flags = client.connected.export.flags
        assert not flags & (TF.SEND_FAST_ZERO | TF.SEND_WRITE_ZEROES | TF.SEND_TRIM)
        for zflags in (F.FAST_ZERO, F.FAST_ZERO | F.NO_HOLE | F.FUA):
            result = client.call(Command.WRITE_ZEROES, 0, 4096, zflags)
            assert result.error in (Errno.EINVAL, Errno.EPERM)  # never ENOTSUP, never a crash
        assert client.call(Command.READ, 0, 4096).data == PATTERN
    finally:
        client.close()
    assert image.read_bytes() == before
    assert_serving(served)


def test_fua_is_accepted_on_every_command_when_advertised(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0")
    client = connected(served)
    try:
        assert client.connected is not None
        flags = client.connected.export.flags
        assert flags & TF.SEND_FUA
        assert client.call(Command.WRITE, 8192, 4, F.FUA, b"fua!").error == 0
        assert client.call(Command.READ, 8192, 4, F.FUA).data == b"fua!"
        assert client.call(Command.FLUSH, 0, 0, F.FUA).error == 0
        assert client.call(Command.CACHE, 0, 4096, F.FUA).error == 0
        assert client.call(Command.BLOCK_STATUS, 0, 4096, F.FUA).error == 0
        if flags & TF.SEND_TRIM:
            assert client.call(Command.TRIM, 1 << 20, 4096, F.FUA).error == 0
        assert client.call(Command.WRITE_ZEROES, 8192, 4, F.FUA).error == 0
        assert client.call(Command.READ, 8192, 4).data == bytes(4)
    finally:
        client.close()
