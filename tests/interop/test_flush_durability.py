"""A flushed (or FUA) write survives `kill -9` of the server.

The client writes, gets the FLUSH (or FUA) reply, and stays connected while
the server is killed, so nothing at disconnect or shutdown can rescue a
write the server only pretended to make durable.  Then the image (or the
persisted cow overlay, through a fresh server) must hold the data.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need

from ._support import MiB, client_env, nbdsh, read_at, sha256_file

pytestmark = pytest.mark.interop

WRITE_AND_HOLD = """
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
mode = sys.argv[2]
h.pwrite(b"\\xd5" * (1 << 20), 40 << 20)
h.pwrite(b"tail", h.get_size() - 4, nbd.CMD_FLAG_FUA if mode == "fua" else 0)
h.pwrite(b"\\x6b" * 4096, 3 << 20, nbd.CMD_FLAG_FUA if mode == "fua" else 0)
if mode == "flush":
    h.flush()
print("acknowledged", flush=True)
sys.stdin.read()  # hold the connection until the server is gone
"""


def write_then_kill(served: Served, uri: str, mode: str) -> None:
    """Write, wait for the acknowledgement, SIGKILL the server with the client connected."""
    client = subprocess.Popen(
        ["/usr/bin/python3", "-c", WRITE_AND_HOLD, uri, mode],
        env=client_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "acknowledged"
        served.proc.send_signal(signal.SIGKILL)
        assert served.proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.close()
        client.stdout.close()
        client.wait(timeout=10)


@pytest.mark.parametrize("mode", ["flush", "fua"])
def test_acknowledged_durable_writes_survive_kill_9(
    mode: str, serve: Callable[..., Served], image: Path
) -> None:
    need("nbdsh")
    served = serve(str(image), "--name", "disk", "--port", "0")
    write_then_kill(served, served.uri("disk"), mode)
    if mode == "flush":
        assert read_at(image, 40 * MiB, MiB) == b"\xd5" * MiB
    assert read_at(image, 3 * MiB, 4096) == b"\x6b" * 4096
    assert read_at(image, 64 * MiB - 4, 4) == b"tail"


@pytest.mark.parametrize("mode", ["flush", "fua"])
def test_durable_writes_to_a_persistent_overlay_survive_kill_9(
    mode: str, serve: Callable[..., Served], image: Path, tmp_path: Path
) -> None:
    need("nbdsh")
    overlay = tmp_path / "overlay.img"
    args = (str(image), "--name", "disk", "--port", "0", "--cow-persist", str(overlay))
    base = sha256_file(image)
    served = serve(*args)
    write_then_kill(served, served.uri("disk"), mode)
    assert sha256_file(image) == base  # the base is never written

    again = serve(*args)
    nbdsh(
        again.uri("disk"),
        f"""
        if {mode == "flush"}:
            assert h.pread(1 << 20, 40 << 20) == b"\\xd5" * (1 << 20)
        assert h.pread(4096, 3 << 20) == b"\\x6b" * 4096
        assert h.pread(4, h.get_size() - 4) == b"tail"
        assert h.pread(16, 0) == bytes(range(16))  # unwritten blocks come from the base
        """,
    )
