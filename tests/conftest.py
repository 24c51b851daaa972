"""Shared fixtures: a real `ovis serve` process on loopback, image files, real etcd
clusters (tests/etcd.py) and small tmpfs mounts for full-disk tests."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.etcd import EtcdCluster, etcd_cluster

OVIS = [sys.executable, "-m", "ovis"]
READY = re.compile(
    r"ovis serve: serving .* on (?:unix:(?P<unix>\S+)|\[?(?P<host>[^\s\]]+)\]?:(?P<port>\d+))"
)


class Served:
    """A running `ovis serve` child process."""

    def __init__(
        self, proc: subprocess.Popen[str], uri_base: str, control: Path, log: Path
    ) -> None:
        self.proc = proc
        self.uri_base = uri_base
        self.control = control
        self.log = log

    def uri(self, name: str = "") -> str:
        return self.uri_base.replace("{name}", name)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text()


def start_ovis(args: list[str], workdir: Path, *, timeout: float = 15) -> Served:
    log = workdir / f"ovis-{time.monotonic_ns()}.log"
    control = workdir / f"control-{time.monotonic_ns()}.sock"
    extra = [] if "--inetd" in args or "--control" in args else ["--control", str(control)]
    if not {"--port", "--unix", "--inetd"} & set(args):
        extra += ["--port", "0"]  # never the default port: other servers may hold it
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*OVIS, "serve", *args, *extra, "-v"], stdout=out, stderr=subprocess.STDOUT, text=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = READY.search(log.read_text())
        if match:
            if match["unix"]:
                base = f"nbd+unix:///{{name}}?socket={match['unix']}"
            else:
                host = match["host"]
                host = f"[{host}]" if ":" in host else host
                base = f"nbd://{host}:{match['port']}/{{name}}"
            return Served(proc, base, control, log)
        if proc.poll() is not None:
            raise AssertionError(f"ovis serve exited {proc.returncode}: {log.read_text()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"ovis serve did not start: {log.read_text()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def _serve(*args: str, timeout: float = 15) -> Served:
        served = start_ovis(list(args), tmp_path, timeout=timeout)
        started.append(served)
        return served

    yield _serve
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()


def make_image(path: Path, size: int, *, pattern: bool = True) -> Path:
    """A sparse image with some data: the first MiB patterned, a hole, then more data."""
    with open(path, "wb") as f:
        f.truncate(size)
        if pattern:
            block = bytes(range(256)) * 4096  # 1 MiB
            f.write(block)
            if size >= 8 << 20:
                f.seek(size - (2 << 20))
                f.write(block)
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return make_image(tmp_path / "disk.img", 64 << 20)


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/setup")


def run(
    cmd: list[str], *, check: bool = True, timeout: float = 120, **kw: object
) -> subprocess.CompletedProcess[str]:
    """Run a real client; show its output when it fails."""
    env = dict(os.environ)
    env["PATH"] = "/usr/bin:" + env.get("PATH", "")  # nbdsh needs Debian's python3
    env.pop("PYTHONPATH", None)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def etcd1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    yield from etcd_cluster(tmp_path_factory.mktemp("etcd1"), 1)


@pytest.fixture(scope="module")
def etcd3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    yield from etcd_cluster(tmp_path_factory.mktemp("etcd3"), 3)


@pytest.fixture
def fresh_etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A 3-member cluster of its own, for tests that kill members."""
    yield from etcd_cluster(tmp_path, 3)


@contextlib.contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `mount` (created); skips the test where mounting
    is not allowed (root only)."""
    mount.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
