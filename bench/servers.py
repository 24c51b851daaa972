"""Start and stop each NBD server under test on a loopback port or a unix socket.

Every server is stopped by its own PID, never by name: other people's servers
may be running on the same machine.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OVIS = REPO / ".venv" / "bin" / "ovis"
PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens: a loopback TCP port, or a unix socket when `socket` is set."""

    name: str
    port: int = 0
    socket: Path | None = None

    def uri(self) -> str:
        if self.socket is not None:
            return f"nbd+unix:///{self.name}?socket={self.socket}"
        return f"nbd://127.0.0.1:{self.port}/{self.name}"


@dataclass
class Running:
    """A started server: `pid` is the serving process (for nbd-server, the daemon)."""

    server: str
    pid: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def become_subreaper() -> None:
    """Adopt orphans, so nbd-server's daemon becomes our child and can be reaped by PID."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _ovis(image: Path, ep: Endpoint, workdir: Path) -> list[str]:
    where = ["--unix", str(ep.socket)] if ep.socket else ["--port", str(ep.port)]
    control = workdir / "ovis-control.sock"
    return [str(OVIS), "serve", str(image), "--name", ep.name, *where, "--control", str(control)]


def _qemu_nbd(image: Path, ep: Endpoint, workdir: Path) -> list[str]:
    where = ["-k", str(ep.socket)] if ep.socket else ["-b", "127.0.0.1", "-p", str(ep.port)]
    return [
        "qemu-nbd",
        "-f",
        "raw",
        "-x",
        ep.name,
        "-e",
        "8",
        "-t",
        "--cache=writeback",
        *where,
        str(image),
    ]


def _nbdkit(image: Path, ep: Endpoint, workdir: Path) -> list[str]:
    where = ["-U", str(ep.socket)] if ep.socket else ["-i", "127.0.0.1", "-p", str(ep.port)]
    return ["nbdkit", "-f", *where, "-e", ep.name, "file", f"file={image}"]


def _nbd_server(image: Path, ep: Endpoint, workdir: Path) -> list[str]:
    if ep.socket:
        listen = f"unixsock = {ep.socket}\n"
    else:
        listen = f"listenaddr = 127.0.0.1\nport = {ep.port}\n"
    config = workdir / "nbd-server.conf"
    config.write_text(f"[generic]\n{listen}\n[{ep.name}]\nexportname = {image}\n")
    return ["nbd-server", "-C", str(config), "-p", str(workdir / "nbd-server.pid")]


Command = Callable[[Path, Endpoint, Path], list[str]]
# name -> (binary, command line); nbd-server is the one that daemonizes.
SERVERS: dict[str, tuple[str, Command]] = {
    "ovis": (str(OVIS), _ovis),
    "qemu-nbd": ("qemu-nbd", _qemu_nbd),
    "nbdkit": ("nbdkit", _nbdkit),
    "nbd-server": ("nbd-server", _nbd_server),
}
DAEMONIZES = {"nbd-server"}


def missing_binary(server: str) -> str | None:
    """The binary a server needs if it is not installed, else None."""
    binary = SERVERS[server][0]
    return None if shutil.which(binary) else binary


def _answers(ep: Endpoint) -> bool:
    """Does an NBD server answer at ep? Read its greeting, then hang up cleanly.

    (/proc/net/tcp is no use for this: on this kernel it can miss new listeners.)
    """
    family = socket.AF_UNIX if ep.socket is not None else socket.AF_INET
    address = str(ep.socket) if ep.socket is not None else ("127.0.0.1", ep.port)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        try:
            probe.connect(address)
            return probe.recv(8, socket.MSG_WAITALL) == b"NBDMAGIC"
        except OSError:
            return False


def _alive(running: Running) -> bool:
    if running.proc is not None:
        return running.proc.poll() is None
    try:  # an adopted daemon (see become_subreaper): reap it
        done, _ = os.waitpid(running.pid, os.WNOHANG)
    except ChildProcessError:  # not our child after all: look at /proc instead
        try:
            state = Path(f"/proc/{running.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state not in ("Z", "X")
    return done == 0


def start(
    server: str, image: Path, ep: Endpoint, workdir: Path, extra: list[str], timeout: float = 30
) -> Running:
    """Start `server` (with `extra` arguments) exporting image at ep; wait until it answers."""
    log = workdir / f"{server}.log"
    argv = SERVERS[server][1](image, ep, workdir) + extra
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    running = Running(server, proc.pid, log, proc)
    deadline = time.monotonic() + timeout
    if server in DAEMONIZES:
        if proc.wait(timeout) != 0:
            raise RuntimeError(f"{server} exited {proc.returncode}: {log.read_text()}")
        pidfile = workdir / "nbd-server.pid"
        while not pidfile.exists() or not pidfile.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server} wrote no pidfile: {log.read_text()}")
            time.sleep(0.02)
        running = Running(server, int(pidfile.read_text()), log)
    while not _answers(ep):
        if not _alive(running) or time.monotonic() > deadline:
            stop(running)
            raise RuntimeError(f"{server} did not start listening: {log.read_text()}")
        time.sleep(0.02)
    return running


def stop(running: Running, timeout: float = 30) -> None:
    """SIGTERM the server's PID, wait for it to exit, SIGKILL it if it will not."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(running.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while _alive(running) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _alive(running):
            break
