"""Helpers for migration tests with real processes: the CLI, qemu-nbd, fio, clients."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ovis.nbd._handshake_client import ClientHandshake, Connected
from ovis.nbd.client import Address, NbdClient, _handshake
from ovis.serve import control_request
from tests.conftest import OVIS, Served, need

from .helpers import MiB, _wait_listening, free_port


def ovis_cli(served: Served, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ovis ARGS --control <served's socket>`."""
    out = subprocess.run(
        [*OVIS, *args, "--control", str(served.control)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def migrate(served: Served, *args: str) -> dict[str, Any]:
    """`ovis migrate ARGS --json` on `served`; the status it prints."""
    result: dict[str, Any] = json.loads(ovis_cli(served, "migrate", *args, "--json").stdout)
    return result


def control(served: Served, op: str, name: str = "disk", **fields: Any) -> dict[str, Any]:
    """One request straight over the control socket (each CLI run costs 0.6 s of start-up).

    Returns the reply's status; raises ControlError with the server's message.
    """
    reply = control_request(served.control, {"op": op, "name": name, **fields})
    result: dict[str, Any] = reply["status"]
    return result


def status(served: Served, name: str = "disk") -> dict[str, Any]:
    return control(served, "migrate-status", name)


def proxy_status(served: Served, name: str = "disk") -> dict[str, Any]:
    proxy: dict[str, Any] = status(served, name)["proxy"]
    return proxy


def mirror_status(served: Served, name: str = "disk") -> dict[str, Any]:
    mirror: dict[str, Any] = status(served, name)["mirror"]
    return mirror


def wait_until(what: str, check: Callable[[], object], timeout: float = 30) -> object:
    """Poll `check` until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def random_image(path: Path, size: int, seed: int) -> Path:
    """An image of random bytes with no zero 4 KiB block (nothing passes for a hole)."""
    block = 4 * MiB
    with open(path, "wb") as f:
        for pos in range(0, size, block):
            f.write(os.urandom(min(block, size - pos)).replace(b"\0", bytes([seed % 255 + 1])))
    return path


class Processes:
    """External servers a test started; each is stopped by its own PID at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def qemu_nbd(self, image: Path, port: int | None = None) -> tuple[str, subprocess.Popen[bytes]]:
        need("qemu-nbd")
        port = port or free_port()
        cmd = ["qemu-nbd", "-f", "raw", "-x", "disk", "-e", "8", "-t", "--cache=writeback"]
        cmd += ["-b", "127.0.0.1", "-p", str(port), str(image)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        _wait_listening(proc, port, "qemu-nbd")
        return f"nbd://127.0.0.1:{port}/disk", proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def fio(uri: str, *args: str, iolog: Path | None = None) -> subprocess.Popen[str]:
    """Start fio's nbd engine on `uri`: 4 KiB random writes with crc32c verification."""
    need("fio")
    cmd = ["fio", "--name=load", "--ioengine=nbd", f"--uri={uri}", "--rw=randwrite", "--bs=4k"]
    cmd += ["--iodepth=8", "--verify=crc32c", "--verify_state_save=0", "--output-format=terse"]
    cmd += args
    if iolog is not None:
        cmd.append(f"--write_iolog={iolog}")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{proc.args!r} exited {proc.returncode}:\n{out}"
    return out


def written_blocks(iolog: Path) -> set[int]:
    """Offsets of the writes in a fio (version 3) iolog."""
    offsets = set()
    for line in iolog.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 5 and fields[2] == "write":
            assert int(fields[4]) == 4096, line
            offsets.add(int(fields[3]))
    return offsets


def qemu_img_compare(a: Path, b: Path) -> None:
    need("qemu-img")
    out = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "raw", str(a), str(b)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"{a} and {b} differ: {out.stdout}{out.stderr}"


async def connect_from(uri: str, local_host: str) -> NbdClient:
    """An NbdClient whose connection comes from `local_host` (e.g. 127.0.0.2)."""
    address = Address.parse(uri)
    reader, writer = await asyncio.open_connection(
        address.host, address.port, local_addr=(local_host, 0)
    )
    try:
        hs = ClientHandshake(address.export)
        event = await _handshake(reader, writer, hs, None, address.host)
    except BaseException:
        writer.close()
        raise
    assert isinstance(event, Connected)
    return NbdClient(reader, writer, event)
