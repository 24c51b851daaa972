"""nbdinfo --json: the flags each kind of export advertises, and that they are true.

A flag is a promise: a client relies on can_multi_conn to spread writes over
connections and flush only one, on can_fast_zero to zero without falling
back to writes, on is_read_only to expect EPERM.  Each promise is checked
by using it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import need

from ._support import IMAGE_SIZE, export_info, python3_nbd
from .conftest import Export

pytestmark = pytest.mark.interop

EXPECTED = {
    "plain": {
        "is_read_only": False, "can_multi_conn": True, "can_flush": True, "can_fua": True,
        "can_trim": True, "can_zero": True, "can_fast_zero": True, "can_cache": True,
        "can_df": True,
    },
    "readonly": {
        "is_read_only": True, "can_multi_conn": True, "can_trim": False, "can_zero": False,
        "can_fast_zero": False, "can_cache": True,
    },
    "cow": {
        "is_read_only": False, "can_multi_conn": False, "can_flush": True, "can_fua": True,
        "can_trim": True, "can_zero": True, "can_fast_zero": True,
    },
}  # fmt: skip

CHECK_PROMISES = """
import sys, nbd

def connect():
    h = nbd.NBD()
    h.connect_uri(sys.argv[1])
    return h

a, b = connect(), connect()
offset = 20 << 20
if a.is_read_only():
    # The server itself must refuse, not just libnbd: turn off libnbd's checks.
    a.set_strict_mode(0)
    for attempt in (
        lambda: a.pwrite(b"x" * 4096, offset),
        lambda: a.trim(4096, offset),
        lambda: a.zero(4096, offset),
    ):
        try:
            attempt()
        except nbd.Error as exc:
            assert exc.errno == "EPERM", exc
        else:
            raise AssertionError("a read-only export accepted a write")
    sys.exit(0)

a.pwrite(b"\\xaa" * 65536, offset)
a.flush()
seen = b.pread(65536, offset)
if a.can_multi_conn():
    assert seen == b"\\xaa" * 65536, "multi-conn: a flushed write is not visible elsewhere"
else:
    print("private writes:", seen != b"\\xaa" * 65536)
if a.can_fast_zero():
    a.zero(65536, offset, nbd.CMD_FLAG_FAST_ZERO)
    assert a.pread(65536, offset) == bytes(65536)
"""


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_flags_match_what_the_export_supports(
    variant: str, serve_variant: Callable[[str, Path], Export], image: Path
) -> None:
    need("nbdinfo")
    export = serve_variant(variant, image)
    info = export_info(export.uri)
    assert info["export-size"] == IMAGE_SIZE
    for flag, value in EXPECTED[variant].items():
        assert info[flag] is value, flag
    result = python3_nbd(CHECK_PROMISES, export.uri)
    if variant == "cow":
        # Without multi-conn, each connection of a cow export has its own overlay.
        assert "private writes: True" in result.stdout
