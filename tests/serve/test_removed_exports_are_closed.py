"""A removed or replaced export closes its image once its last client has gone: no fd leak."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Command
from tests.conftest import Served

from .helpers import assert_serving, connected


def control(served: Served, request: dict[str, object]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(served.control))
        sock.sendall(json.dumps(request).encode() + b"\n")
        reply = json.loads(sock.makefile().readline())
    assert reply["ok"], reply


def open_files(served: Served, image: Path) -> int:
    fds = Path(f"/proc/{served.proc.pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(image))


def wait_for_open_files(served: Served, image: Path, count: int) -> None:
    deadline = time.monotonic() + 5
    while open_files(served, image) != count:
        assert time.monotonic() < deadline, f"{open_files(served, image)} fds on {image}"
        time.sleep(0.02)


def test_add_remove_cycles_do_not_leak_descriptors(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0", "--name", "disk")
    assert open_files(served, image) == 1
    for _ in range(20):
        control(served, {"op": "add", "export": {"name": "extra", "path": str(image)}})
        control(served, {"op": "remove", "name": "extra"})
    wait_for_open_files(served, image, 1)
    assert_serving(served, "disk")


def test_removed_export_closes_when_its_last_client_leaves(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0", "--name", "disk")
    control(served, {"op": "add", "export": {"name": "extra", "path": str(image)}})
    client = connected(served, "extra")
    control(served, {"op": "remove", "name": "extra"})
    assert open_files(served, image) == 2  # still in use
    assert client.call(Command.WRITE, 0, 4, data=b"used").error == 0
    client.disconnect()
    wait_for_open_files(served, image, 1)
    assert image.read_bytes()[:4] == b"used"
    assert_serving(served, "disk", b"used")
