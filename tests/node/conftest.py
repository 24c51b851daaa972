"""Node fixtures: a real `ovis node start` process on loopback, and the `ovis vdi` CLI.

`node` starts one on a fresh data directory (ports 0, parsed from the ready
line); `start_node(data_dir)` starts more, or restarts one on the same data
directory after a kill.  `Node.vdi(...)` runs `python -m ovis vdi ... --node
URL` as a user would, and `Node.vdi_json(...)` adds --json and parses it.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ovis.nbd.client import NbdClient
from tests.conftest import OVIS, run
from tests.interop._support import sha256_file

__all__ = ["MiB", "Node", "patterned_image", "qemu_io", "sha256_file"]

MiB = 1024 * 1024
READY = re.compile(
    r"ovis node: serving volumes from (?P<data>\S+) on "
    r"(?:unix:(?P<unix>\S+)|\[?(?P<host>[^\s\]]+)\]?:(?P<port>\d+)), api (?P<api>http://\S+)"
)


class Node:
    """A running `ovis node start` child process."""

    def __init__(self, proc: subprocess.Popen[str], data_dir: Path, log: Path) -> None:
        self.proc = proc
        self.data_dir = data_dir
        self.log = log
        match = READY.search(log.read_text())
        assert match is not None
        self.api = match["api"]
        if match["unix"]:
            self.uri_base = f"nbd+unix:///{{name}}?socket={match['unix']}"
        else:
            self.uri_base = f"nbd://{match['host']}:{match['port']}/{{name}}"
            self.port = int(match["port"])

    def uri(self, spec: str) -> str:
        return self.uri_base.replace("{name}", spec)

    def vdi(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*OVIS, "vdi", *args, "--node", self.api], capture_output=True, text=True, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"ovis vdi {' '.join(args)} failed:\n{result.stderr}")
        return result

    def vdi_json(self, *args: str) -> Any:
        return json.loads(self.vdi(*args, "--json").stdout)

    def vdi_error(self, *args: str) -> str:
        """Run a command that must fail; its one-line error."""
        return self.vdi_errors([args])[0]

    def vdi_errors(self, commands: list[tuple[str, ...]]) -> list[str]:
        """Run commands that must fail, all at once (each CLI start costs ~0.3 s)."""
        procs = [
            subprocess.Popen(
                [*OVIS, "vdi", *args, "--node", self.api],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in commands
        ]
        errors = []
        for args, proc in zip(commands, procs, strict=True):
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 1, (args, proc.returncode, out, err)
            assert "Traceback" not in err, err
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), (args, err)
            errors.append(lines[0])
        return errors

    def api_call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """One request to the management API: (status, decoded JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.api + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def write(self, spec: str, offset: int, data: bytes) -> None:
        """Write and flush through a fresh NBD connection."""

        async def go() -> None:
            client = await NbdClient.connect(self.uri(spec))
            try:
                await client.write(offset, data)
                await client.flush()
            finally:
                await client.aclose()

        asyncio.run(go())

    def read(self, spec: str, offset: int, length: int) -> bytes:
        """Read through a fresh NBD connection, in pipelined 4 MiB requests."""

        out: list[bytes] = []

        async def go() -> None:
            client = await NbdClient.connect(self.uri(spec))
            try:
                parts = range(offset, offset + length, 4 * MiB)
                reads = [client.read(at, min(4 * MiB, offset + length - at)) for at in parts]
                out.extend(await asyncio.gather(*reads))
            finally:
                await client.aclose()

        # Not returned through asyncio.run: on the way out, Python 3.11 can
        # repr() the main task, result included (0.5 s for 24 MiB).
        asyncio.run(go())
        return b"".join(out)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text()


def launch(data_dir: Path, workdir: Path, *extra: str, timeout: float = 15) -> Node:
    log = workdir / f"node-{time.monotonic_ns()}.log"
    args = ["node", "start", "--data", str(data_dir), "--port", "0", "--api-port", "0", "-v"]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*OVIS, *args, *extra], stdout=out, stderr=subprocess.STDOUT, text=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if READY.search(log.read_text()):
            return Node(proc, data_dir, log)
        if proc.poll() is not None:
            raise AssertionError(f"ovis node exited {proc.returncode}: {log.read_text()}")
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise AssertionError(f"ovis node did not start: {log.read_text()}")


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start nodes (on `data_dir`, default tmp_path/data); all are stopped afterwards."""
    started: list[Node] = []

    def _start(data_dir: Path | None = None, *extra: str) -> Node:
        node = launch(data_dir or tmp_path / "data", tmp_path, *extra)
        started.append(node)
        return node

    yield _start
    for node in started:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()


@pytest.fixture
def node(start_node: Callable[..., Node]) -> Node:
    return start_node()


def qemu_io(uri: str, *commands: str) -> str:
    """qemu-io on a raw NBD export; fails if any command reports a failure or error."""
    args = ["qemu-io", "-f", "raw"]
    for command in commands:
        args += ["-c", command]
    result = run([*args, uri])
    output = result.stdout + result.stderr
    assert "fail" not in output.lower() and "error" not in output.lower(), output
    return output


def patterned_image(path: Path, size: int) -> Path:
    """A sparse file: patterned data at a few places, holes between."""
    with open(path, "wb") as f:
        f.truncate(size)
        for at, byte in ((0, 0x5A), (size // 3, 0xC3), (size - 3 * MiB, 0x3C)):
            f.seek(at)
            f.write(bytes([byte]) * (MiB + 4096) + bytes(range(256)) * 16)
    return path
