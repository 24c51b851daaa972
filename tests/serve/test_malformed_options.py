"""Malformed INFO/GO/meta-context options get ERR_INVALID; a bad EXPORT_NAME ends the connection."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Option
from ovis.nbd import Reply as R
from tests.conftest import Served

from .helpers import assert_serving, name_and_infos, option, raw_client

U32 = struct.Struct(">I")


def queries(name: bytes, *items: bytes) -> bytes:
    body = U32.pack(len(name)) + name + U32.pack(len(items))
    return body + b"".join(U32.pack(len(q)) + q for q in items)


MALFORMED = [
    (Option.GO, b""),  # no name length at all
    (Option.GO, U32.pack(100) + b"disk"),  # name runs past the end
    (Option.GO, name_and_infos("")[:-1]),  # no info count
    (Option.INFO, U32.pack(0) + struct.pack(">H", 3) + b"\0\1"),  # count says 3, has 1
    (Option.INFO, U32.pack(2) + b"\xff\xfe" + b"\0\0"),  # name is not UTF-8
    (Option.INFO, U32.pack(3) + b"a\0b" + b"\0\0"),  # name contains NUL
    (Option.GO, U32.pack(5000) + b"n" * 5000 + b"\0\0"),  # name over 4096 bytes
    (Option.LIST_META_CONTEXT, queries(b"", b"base:")[:-2]),  # query runs past the end
    (Option.LIST_META_CONTEXT, queries(b"") + b"trailing"),
    (Option.SET_META_CONTEXT, queries(b"", b"base:allocation")),  # before STRUCTURED_REPLY
]


def test_malformed_options_get_err_invalid(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--port", "0")
    with raw_client(served) as client:
        client.start_options()
        for code, payload in MALFORMED:
            client.send(option(code, payload))
            replies = client.option_replies(code)
            assert [kind for kind, _ in replies] == [R.ERR_INVALID], (code, payload[:40], replies)
        # Still in step: a well-formed INFO is answered with INFO_EXPORT and ACK.
        client.send(option(Option.INFO, name_and_infos("")))
        kinds = [kind for kind, _ in client.option_replies(Option.INFO)]
        assert kinds[0] == R.INFO and kinds[-1] == R.ACK
    assert_serving(served)


def test_export_name_for_an_unknown_export_closes(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0")
    for name in (b"nonesuch", b"\xff\xfe", b"x" * 5000):
        with raw_client(served) as client:
            client.start_options()
            client.send(option(Option.EXPORT_NAME, name))
            assert client.closed_by_server(), name[:20]
    with raw_client(served) as client:  # EXPORT_NAME of a real export: size, flags, no padding
        client.start_options()
        client.send(option(Option.EXPORT_NAME, image.name.encode()))
        size, _flags = struct.unpack(">QH", client.recv_exact(10))
        assert size == 64 << 20
    assert_serving(served)
