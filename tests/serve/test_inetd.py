"""--inetd: one client on stdin/stdout, served until it disconnects, then exit 0."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from ovis.nbd import Command
from tests.conftest import OVIS

from .helpers import PATTERN, RawClient


def test_inetd_serves_one_client_on_stdin(image: Path, tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    log = tmp_path / "inetd.log"
    with theirs, open(log, "w") as err:
        proc = subprocess.Popen(
            [*OVIS, "serve", str(image), "--inetd", "-v"],
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
            stderr=err,
        )
    try:
        client = RawClient(ours)
        connected = client.handshake()
        assert connected.export.size == 64 << 20
        assert client.call(Command.READ, 0, 4096).data == PATTERN
        assert client.call(Command.WRITE, 8192, 5, data=b"inetd").error == 0
        client.disconnect()
        assert proc.wait(10) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert image.read_bytes()[8192:8197] == b"inetd"
    assert "Traceback" not in log.read_text()
