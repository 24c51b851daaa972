"""Client flags the server did not offer, or no FIXED_NEWSTYLE, end the connection at once."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Option
from ovis.nbd import Reply as R
from tests.conftest import Served

from .helpers import assert_serving, option, raw_client

BAD_FLAGS = {
    "none": 0,
    "no-fixed-newstyle": 2,
    "unknown-only": 1 << 2,
    "unknown-bit2": 1 | 1 << 2,
    "unknown-bit31": 1 | 1 << 31,
    "all-bits": 0xFFFF_FFFF,
}


def test_bad_client_flags_close_the_connection(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--port", "0")
    for name, flags in BAD_FLAGS.items():
        with raw_client(served) as client:
            client.greeting()
            # The option right behind the flags must never be answered.
            client.send(struct.pack(">I", flags) + option(Option.LIST))
            assert client.closed_by_server(), f"server kept a client with bad flags ({name})"
        assert_serving(served)


def test_good_client_flags_are_accepted(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--port", "0")
    for flags in (1, 3):  # FIXED_NEWSTYLE, with and without NO_ZEROES
        with raw_client(served) as client:
            client.start_options(flags)
            client.send(option(Option.LIST))
            assert client.option_replies(Option.LIST)[-1][0] == R.ACK
