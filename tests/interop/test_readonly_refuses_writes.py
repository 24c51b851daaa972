"""A --readonly export: every client's writes fail with a permission error.

libnbd and qemu both refuse to write to an export flagged read-only before
sending anything, so the server's own refusal (EPERM, per the spec's
"SHOULD return EPERM on a write or trim request to a read-only export") is
checked with libnbd's strict mode off, which sends the requests anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need, run

from ._support import export_info, python3_nbd, qemu_image, qemu_io, sha256_file

pytestmark = pytest.mark.interop

SEND_WRITES_ANYWAY = """
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.is_read_only()
h.set_strict_mode(0)  # send what the flags say not to send
failures = {}
for name, attempt in {
    "write": lambda: h.pwrite(b"x" * 4096, 4096),
    "write+fua": lambda: h.pwrite(b"x" * 4096, 4096, nbd.CMD_FLAG_FUA),
    "trim": lambda: h.trim(4096, 4096),
    "zero": lambda: h.zero(4096, 4096),
    "zero no-hole": lambda: h.zero(4096, 4096, nbd.CMD_FLAG_NO_HOLE),
}.items():
    try:
        attempt()
    except nbd.Error as exc:
        failures[name] = exc.errno
    else:
        failures[name] = "accepted"
assert h.pread(4, 0) == bytes([0, 1, 2, 3])  # and the connection still works
print(failures)
assert all(errno == "EPERM" for errno in failures.values()), failures
"""


@pytest.fixture
def readonly(serve: Callable[..., Served], image: Path) -> Served:
    return serve(str(image), "--name", "disk", "--port", "0", "--readonly")


def test_server_answers_eperm_to_every_kind_of_write(readonly: Served, image: Path) -> None:
    need("nbdsh")
    before = sha256_file(image)
    python3_nbd(SEND_WRITES_ANYWAY, readonly.uri("disk"))
    assert sha256_file(image) == before


def test_qemu_refuses_and_reads_work(readonly: Served, image: Path, tmp_path: Path) -> None:
    need("qemu-io", "qemu-img", "nbdinfo")
    before = sha256_file(image)
    assert export_info(readonly.uri("disk"))["is_read_only"] is True
    opened = qemu_io(qemu_image(readonly.uri("disk")), "write -P 1 0 4k", check=False)
    assert "Permission denied" in opened.stdout + opened.stderr
    qemu_io(["-r", *qemu_image(readonly.uri("disk"))], "read -P 0 4M 4M", "read -v 0 16")
    target = run(
        ["qemu-img", "convert", "-n", "-f", "raw", str(image), "-O", "raw", readonly.uri("disk")],
        check=False,
    )
    assert target.returncode != 0
    assert sha256_file(image) == before
