"""Requests beyond the advertised maximum block size get an error, and the session goes on.

libnbd normally refuses to send them; with its strict mode off it sends
them, as a careless client would, and checks the server's reply as strictly
as ever.  The server must skip an oversized WRITE payload and answer only
once it is consumed: libnbd is still sending the payload and drops the
connection ("no matching cookie") if the reply comes first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need

from ._support import python3_nbd

pytestmark = pytest.mark.interop

OVERSIZED = """
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
limit = h.get_block_size(nbd.SIZE_MAXIMUM)
assert limit == 32 << 20, limit
h.set_strict_mode(0)
for what, attempt in (
    ("read", lambda: h.pread(limit + 4096, 0)),
    ("write", lambda: h.pwrite(b"\\xee" * (limit + 4096), 0)),
):
    try:
        attempt()
    except nbd.Error as exc:
        assert exc.errno in ("EINVAL", "EOVERFLOW"), (what, str(exc))
    else:
        raise AssertionError(f"an oversized {what} succeeded")
    # The same connection still works, and the skipped payload was not parsed
    # as requests nor written anywhere.
    assert h.pread(4, 0) == bytes([0, 1, 2, 3]), what
h.pwrite(b"ok", 4096)
assert h.pread(2, 4096) == b"ok"
"""


def test_oversized_requests_are_refused_and_the_session_continues(
    serve: Callable[..., Served], image: Path
) -> None:
    need("nbdsh")
    served = serve(str(image), "--name", "disk", "--port", "0")
    python3_nbd(OVERSIZED, served.uri("disk"))
    assert served.proc.poll() is None
