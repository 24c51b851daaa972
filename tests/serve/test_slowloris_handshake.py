"""A handshake dribbled one byte per second is cut off at --handshake-timeout; others carry on."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Option
from tests.conftest import Served

from .helpers import assert_serving, name_and_infos, option, raw_client


def test_slowloris_handshake_is_cut_off(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--port", "0", "--handshake-timeout", "2")
    start = time.monotonic()
    wire = struct.pack(">I", 3) + option(Option.GO, name_and_infos(""))
    with raw_client(served) as slow:
        slow.greeting()
        cut = False
        for byte in wire:
            try:
                slow.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            assert_serving(served)  # a well-behaved client is served meanwhile
            if slow.closed_by_server(timeout=1.0):
                cut = True
                break
        elapsed = time.monotonic() - start
        assert cut, "the dribbled handshake was never cut off"
        assert 1.5 < elapsed < 5, f"cut off after {elapsed:.1f}s, not about 2s"
    assert_serving(served)


def test_handshake_timeout_spares_clients_that_finished(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0", "--handshake-timeout", "0.5")
    with raw_client(served) as client:
        client.handshake()
        time.sleep(1.0)
        assert client.call(0, 0, 16).error == 0
