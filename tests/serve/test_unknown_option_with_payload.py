"""Unknown options (with payloads) get ERR_UNSUP, their payload skipped; negotiation goes on."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Option
from ovis.nbd import Reply as R
from tests.conftest import Served

from .helpers import assert_serving, option, raw_client


def test_unknown_options_get_unsup_and_negotiation_continues(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0", "--description", "the disk")
    with raw_client(served) as client:
        client.start_options()
        # Unknown codes, with payloads that look like other options' headers:
        # the server must skip exactly `len` bytes and stay in step.
        for code, payload in [
            (99, b""),
            (0x7FFF_FFFF, b"x" * 1000),
            (Option.PEEK_EXPORT, b"y"),
            (12345, option(Option.ABORT)),
        ]:
            client.send(option(code, payload))
            assert client.option_reply(code) == (R.ERR_UNSUP, b"unsupported option")
        # Options that take no data, given some, are refused the same way.
        for code in (Option.LIST, Option.STRUCTURED_REPLY, Option.STARTTLS):
            client.send(option(code, b"junk"))
            kind, _ = client.option_reply(code)
            assert kind == R.ERR_INVALID or kind == R.ERR_POLICY, hex(kind)
        # A payload over the option limit is skipped unread and refused.
        client.send(option(77, bytes(256 * 1024)))
        assert client.option_reply(77)[0] == R.ERR_TOO_BIG
        # Still in step: LIST works and ends in ACK.
        client.send(option(Option.LIST))
        replies = client.option_replies(Option.LIST)
        assert [kind for kind, _ in replies] == [R.SERVER, R.ACK]
        (length,) = struct.unpack_from(">I", replies[0][1])
        assert replies[0][1][4 : 4 + length] == image.name.encode()
        assert replies[0][1][4 + length :] == b"the disk"
        client.send(option(Option.ABORT, b"ignored payload"))
        assert client.option_reply(Option.ABORT) == (R.ACK, b"")
        assert client.closed_by_server()
    assert_serving(served)
