"""A client that resets (SO_LINGER 0) in the middle of a large pipelined read batch harms no one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Command
from tests.conftest import Served

from .helpers import assert_serving, connected, no_tracebacks

MiB = 1 << 20


def test_reset_mid_reply_leaves_the_server_serving(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0")
    for round_ in range(6):
        client = connected(served, structured=round_ % 2 == 0)
        for i in range(48):
            client.request(Command.READ, (i % 60) * MiB, MiB)
        if round_ % 3:  # let some of the replies start flowing first
            client.recv_exact(256 * 1024)
        client.reset()
        # Meanwhile and after, others are served.
        assert_serving(served)
    assert served.stop() == 0
    no_tracebacks(served)
