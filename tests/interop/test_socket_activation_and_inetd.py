"""libnbd starting ovis itself: systemd socket activation (LISTEN_FDS) and --inetd.

nbdinfo, nbdcopy and nbdsh's connect_systemd_socket_activation hand the
server a listening socket in LISTEN_FDS, as systemd does; connect_command
gives it the connection on stdin/stdout, as inetd does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import need, run

from ._support import IMAGE_SIZE, MiB, python3_nbd, read_at, sha256_file

pytestmark = pytest.mark.interop


def ovis_serve(*args: str) -> list[str]:
    return [sys.executable, "-m", "ovis", "serve", *args]


def test_socket_activation_with_nbdinfo_and_nbdcopy(image: Path, tmp_path: Path) -> None:
    need("nbdinfo", "nbdcopy")
    server = ["[", *ovis_serve(str(image), "--control", str(tmp_path / "c.sock")), "]"]
    info = run(["nbdinfo", "--json", "--", *server]).stdout
    assert f'"export-size": {IMAGE_SIZE}' in info
    out = tmp_path / "out.img"
    run(["nbdcopy", "--", *server, str(out)])
    assert sha256_file(out) == sha256_file(image)
    source = tmp_path / "source.img"
    source.write_bytes(os.urandom(MiB) + bytes(IMAGE_SIZE - MiB))
    run(["nbdcopy", "--", str(source), *server])
    assert sha256_file(image) == sha256_file(source)


STARTED_BY_LIBNBD = """
import sys, nbd
how, argv = sys.argv[1], sys.argv[2:]
h = nbd.NBD()
if how == "inetd":
    h.connect_command(argv)
else:
    h.connect_systemd_socket_activation(argv)
assert h.get_size() == 64 << 20
assert h.pread(4, 0) == bytes([0, 1, 2, 3])
h.pwrite(how.encode() * 100, 6 << 20)
h.flush()
assert h.pread(len(how) * 100, 6 << 20) == how.encode() * 100
h.shutdown()
"""


@pytest.mark.parametrize("how", ["inetd", "systemd"])
def test_nbdsh_starts_the_server(how: str, image: Path, tmp_path: Path) -> None:
    need("nbdsh")
    extra = ["--inetd"] if how == "inetd" else ["--control", str(tmp_path / "c.sock")]
    python3_nbd(STARTED_BY_LIBNBD, how, *ovis_serve(str(image), *extra))
    assert read_at(image, 6 * MiB, len(how) * 100) == how.encode() * 100
