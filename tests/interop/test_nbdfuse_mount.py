"""nbdfuse: the export mounted as a file, written and read with ordinary file I/O."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Served, need

from ._support import PATTERN_MIB, MiB, client_env, read_at

pytestmark = pytest.mark.interop


def fuse_usable() -> str | None:
    """Why FUSE cannot be used here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    # As root libfuse mounts by itself; anyone else needs the setuid helper.
    if os.geteuid() != 0 and not (shutil.which("fusermount3") or shutil.which("fusermount")):
        return "fusermount is missing"
    return None


def unmount(mountpoint: Path) -> None:
    helper = shutil.which("fusermount3") or shutil.which("fusermount")
    command = [helper, "-u", str(mountpoint)] if helper else ["umount", str(mountpoint)]
    subprocess.run(command, capture_output=True, timeout=20, check=False)


@pytest.fixture
def mounted(
    serve: Callable[..., Served], image: Path, tmp_path: Path
) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    reason = fuse_usable()
    if reason:
        pytest.skip(reason)
    need("nbdfuse")
    served = serve(str(image), "--name", "disk", "--port", "0")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    log = tmp_path / "nbdfuse.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["nbdfuse", str(mountpoint), served.uri("disk")],
            env=client_env(), stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    device = mountpoint / "nbd"
    deadline = time.monotonic() + 15
    while not device.exists():
        if proc.poll() is not None:
            pytest.fail(f"nbdfuse exited {proc.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("nbdfuse did not mount")
        time.sleep(0.05)
    try:
        yield device, proc
    finally:
        unmount(mountpoint)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_read_and_write_through_a_fuse_file(
    mounted: tuple[Path, subprocess.Popen[str]], image: Path, tmp_path: Path
) -> None:
    device, proc = mounted
    assert device.stat().st_size == 64 * MiB
    assert read_at(device, 0, MiB) == PATTERN_MIB
    data = os.urandom(3 * 4096 + 100)
    fd = os.open(device, os.O_RDWR)
    try:
        os.pwrite(fd, data, 5 * MiB + 7)
        os.fsync(fd)
        assert os.pread(fd, len(data), 5 * MiB + 7) == data
    finally:
        os.close(fd)
    unmount(device.parent)
    assert proc.wait(timeout=15) == 0
    assert not device.exists()
    assert read_at(image, 5 * MiB + 7, len(data)) == data
    assert read_at(image, 5 * MiB, 7) == bytes(7)
