"""--idle-timeout closes a client with nothing in flight for that long; busy clients stay."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Command
from tests.conftest import Served

from .helpers import assert_serving, connected


def test_idle_client_is_closed_and_a_busy_one_is_not(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0", "--idle-timeout", "1")
    idle, busy = connected(served), connected(served)
    try:
        start = time.monotonic()
        while time.monotonic() - start < 2.2:
            assert busy.call(Command.READ, 0, 512).error == 0
            time.sleep(0.2)
        assert idle.closed_by_server(timeout=1.0), "the idle client is still connected"
        assert busy.call(Command.READ, 0, 512).error == 0
    finally:
        idle.close()
        busy.close()
    assert_serving(served)
