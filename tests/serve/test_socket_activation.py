"""systemd socket activation: a listening socket passed as fd 3 with LISTEN_FDS=1 and LISTEN_PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ovis.nbd import Command
from tests.conftest import OVIS

from .helpers import PATTERN, RawClient

# systemd hands over fd 3 and names, in LISTEN_PID, the process meant to use it.
# This wrapper moves our socket to fd 3 (dash cannot redirect fds above 9), sets
# LISTEN_PID to its own pid, and exec()s ovis, which keeps that pid.
WRAPPER = """
import os, sys
os.dup2(int(os.environ.pop("SOCKET_FD")), 3)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def test_socket_activation_serves_the_passed_socket(image: Path, tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    log = tmp_path / "activated.log"
    env = dict(os.environ, SOCKET_FD=str(listener.fileno()))
    with listener, open(log, "w") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-c", WRAPPER, *OVIS[1:]),
                *("serve", str(image), "-v", "--control", str(tmp_path / "control.sock")),
            ],
            pass_fds=(listener.fileno(),),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while "1 socket(s) from systemd" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        for _ in range(2):  # the socket keeps accepting
            client = RawClient(socket.create_connection(("127.0.0.1", port), timeout=10))
            client.handshake()
            assert client.call(Command.READ, 0, 4096).data == PATTERN
            client.disconnect()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
