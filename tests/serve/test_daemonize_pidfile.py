"""--daemonize returns once the daemon listens; --pidfile names the daemon and goes away with it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from ovis.nbd.client import NbdClient
from tests.conftest import OVIS

from .helpers import PATTERN


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_daemonize_writes_a_pidfile_and_serves(image: Path, tmp_path: Path) -> None:
    pidfile, sock = tmp_path / "ovis.pid", tmp_path / "nbd.sock"
    foreground = subprocess.run(
        [
            *OVIS,
            *("serve", str(image), "--unix", str(sock), "--daemonize"),
            *("--pidfile", str(pidfile), "--control", str(tmp_path / "control.sock")),
            *("--log-file", str(tmp_path / "daemon.log"), "-v"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert foreground.returncode == 0, foreground.stderr
    pid = int(pidfile.read_text())
    try:
        assert alive(pid)
        assert os.getsid(pid) != os.getsid(0)  # detached from our session

        async def read() -> bytes:
            client = await NbdClient.connect(f"nbd+unix:///?socket={sock}")
            try:
                return await client.read(0, 4096)
            finally:
                await client.aclose()

        assert asyncio.run(read()) == PATTERN  # listening before the foreground returned
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while alive(pid) or pidfile.exists():
            assert time.monotonic() < deadline, "daemon did not exit and remove its pidfile"
            time.sleep(0.02)
        assert "Traceback" not in (tmp_path / "daemon.log").read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_daemonize_reports_a_start_up_failure(image: Path, tmp_path: Path) -> None:
    sock = tmp_path / "nbd.sock"
    sock.mkdir()  # cannot listen there
    foreground = subprocess.run(
        [
            *OVIS,
            *("serve", str(image), "--unix", str(sock), "--daemonize"),
            *("--pidfile", str(tmp_path / "ovis.pid"), "--control", str(tmp_path / "c.sock")),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert foreground.returncode == 1
    assert foreground.stderr.startswith("Error: cannot listen on"), foreground.stderr
    assert foreground.stderr.count("\n") == 1 and "Traceback" not in foreground.stderr
    assert not (tmp_path / "ovis.pid").exists()
