"""The control socket answers malformed requests with an error; a stuck client cannot block exit."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import OVIS, Served

from .helpers import assert_serving, no_tracebacks


def control(served: Served, raw: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(served.control))
        sock.sendall(raw)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, f"no answer to {raw[:80]!r}"
            data += chunk
    reply = json.loads(data)
    assert isinstance(reply, dict)
    return reply


MALFORMED = [
    b"nonsense\n",
    b"[1, 2]\n",
    b'{"op": "explode"}\n',
    b'{"op": "add"}\n',
    b'{"op": "add", "export": [1]}\n',
    b'{"op": "add", "export": {"name": "x"}}\n',
    b'{"op": "add", "export": {"name": "x", "path": 123}}\n',
    b'{"op": "add", "export": {"name": "x", "path": "IMAGE", "size": 1.5}}\n',
    b'{"op": "add", "export": {"name": "x", "path": "IMAGE", "size": "big"}}\n',
    b'{"op": "add", "export": {"name": "x", "path": "IMAGE", "allow": 5}}\n',
    b'{"op": "add", "export": {"name": "x", "path": "IMAGE", "allow": ["here"]}}\n',
    b'{"op": "remove", "name": ["a"]}\n',
    b'{"op": "snapshot", "name": {"a": 1}}\n',
    b'{"op": "' + b"x" * 100_000 + b'"}\n',  # over the 64 KiB request limit
]


def test_malformed_control_requests_get_an_error(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--port", "0")
    for raw in MALFORMED:
        reply = control(served, raw.replace(b"IMAGE", str(image).encode()))
        assert reply["ok"] is False and isinstance(reply["error"], str), (raw[:80], reply)
    listed = control(served, b'{"op": "list"}\n')["exports"]
    assert [e["name"] for e in listed] == [image.name]  # type: ignore[attr-defined]
    assert_serving(served)
    assert served.stop() == 0
    no_tracebacks(served)


def test_a_silent_control_client_does_not_block_shutdown(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(served.control))
        assert served.stop(timeout=10) == 0
    no_tracebacks(served)


def test_export_add_resolves_a_relative_image_path_where_the_cli_runs(
    serve: Callable[..., Served], image: Path, tmp_path: Path
) -> None:
    served = serve(str(image), "--port", "0")  # the server's cwd is not tmp_path
    result = subprocess.run(
        [*OVIS, "export", "add", "rel", image.name, "--control", str(served.control)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert_serving(served, "rel")
