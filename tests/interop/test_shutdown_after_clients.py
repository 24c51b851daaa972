"""SIGTERM after a mix of real clients: the server drains, exits 0, leaves nothing behind.

Clients come and go in every way real ones do: listing and aborting
(nbdinfo --list), connecting and leaving at once because the export does
not suit them (qemu-io opening a read-only export read-write), finishing
normally, and being killed mid-session.  A connection the server forgets
to close (the client gone, the socket in CLOSE-WAIT) makes the drain wait
forever.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need, run

from ._support import client_env, qemu_image, qemu_io

pytestmark = pytest.mark.interop

HOLD = """
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"held" * 1024, 0)
print("connected", flush=True)
sys.stdin.read()
"""


def test_sigterm_after_clients_of_every_kind(
    serve: Callable[..., Served], image: Path, tmp_path: Path
) -> None:
    need("nbdinfo", "qemu-io", "nbdsh")
    config = tmp_path / "exports.toml"
    config.write_text(
        f'[exports.rw]\npath = "{image}"\n[exports.ro]\npath = "{image}"\nreadonly = true\n'
    )
    served = serve("--config", str(config), "--port", "0")
    for _ in range(3):
        run(["nbdinfo", "--list", served.uri("")])
        refused = qemu_io(qemu_image(served.uri("ro")), "read 0 4k", check=False)
        assert "Permission denied" in refused.stderr
        qemu_io(qemu_image(served.uri("rw")), "write -P 7 0 4k", "read -P 7 0 4k")
        run(["nbdinfo", served.uri("nope")], check=False)
    killed = subprocess.Popen(
        ["/usr/bin/python3", "-c", HOLD, served.uri("rw")],
        env=client_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert killed.stdout is not None and killed.stdout.readline().strip() == "connected"
    killed.kill()
    killed.wait()
    assert killed.stdin is not None
    killed.stdin.close()
    killed.stdout.close()
    time.sleep(0.2)

    served.signal(signal.SIGTERM)
    try:
        status = served.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sockets = run(["ss", "-tanp"], check=False).stdout
        leftover = [line for line in sockets.splitlines() if f"pid={served.proc.pid}," in line]
        pytest.fail(f"ovis serve did not exit after SIGTERM; its sockets: {leftover}")
    assert status == 0, served.output()
