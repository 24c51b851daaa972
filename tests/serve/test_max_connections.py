"""--max-connections: clients over the limit are closed at once; a freed slot is reused."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Command, ProtocolError
from tests.conftest import Served

from .helpers import RawClient, assert_serving, connected


def test_clients_over_the_limit_are_closed(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--port", "0", "--max-connections", "2")
    first, second = connected(served), connected(served)
    try:
        with RawClient.to(served).sock as extra:
            extra.settimeout(5)
            assert extra.recv(100) == b"", "a third client got a greeting"
        assert first.call(Command.READ, 0, 512).error == 0
        assert second.call(Command.READ, 0, 512).error == 0
        second.disconnect()
        deadline = time.monotonic() + 5
        while True:  # the server notices the DISC asynchronously
            try:
                assert_serving(served)
                break
            except (ConnectionError, ProtocolError):
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        first.close()
