"""Clients that do not negotiate structured replies (as the Linux kernel's does not).

There is no kernel NBD client here, so libnbd plays one: it skips
NBD_OPT_STRUCTURED_REPLY, and the server must answer with simple replies
only, never offer DF or base:allocation, and report errors without data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need

from ._support import MiB, python3_nbd, read_at

pytestmark = pytest.mark.interop

KERNEL_LIKE = """
import os, sys, nbd
h = nbd.NBD()
h.set_request_structured_replies(False)
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(sys.argv[1])
assert not h.get_structured_replies_negotiated()
assert not h.can_df()
assert not h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)

data = os.urandom((2 << 20) + 3)
h.pwrite(data, 5 << 20)
assert h.pread(len(data), 5 << 20) == data
h.pwrite(b"fua!" * 1024, 8 << 20, nbd.CMD_FLAG_FUA)
h.flush()
h.trim(1 << 20, 5 << 20)
h.zero(4096, (6 << 20) + 8192, nbd.CMD_FLAG_NO_HOLE)
h.cache(1 << 20, 0)
assert h.pread(1 << 20, 5 << 20) == bytes(1 << 20)
got = h.pread(8192 + 4096 + 3, 6 << 20)
m = 1 << 20
assert got == data[m : m + 8192] + bytes(4096) + data[m + 12288 : m + 12291], "zero"

# Errors carry no data with simple replies; the stream must stay in step.
h.set_strict_mode(0)
for attempt in (
    lambda: h.pread(8192, h.get_size() - 4096),
    lambda: h.block_status(4096, 0, lambda *a: 0),
    lambda: h.pread(4096, 0, nbd.CMD_FLAG_DF),
):
    try:
        attempt()
    except nbd.Error as exc:
        assert exc.errno == "EINVAL", exc
    else:
        raise AssertionError("an invalid request succeeded")
    assert h.pread(4, 0) == bytes([0, 1, 2, 3])
h.shutdown()
"""


def test_simple_replies_only(serve: Callable[..., Served], image: Path) -> None:
    need("nbdsh")
    served = serve(str(image), "--name", "disk", "--port", "0")
    python3_nbd(KERNEL_LIKE, served.uri("disk"))
    assert read_at(image, 8 * MiB, 8) == b"fua!fua!"
