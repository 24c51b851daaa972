"""Exports added, removed and snapshotted at runtime (`ovis export`), seen by real clients."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import OVIS, Served, make_image, need, run

from ._support import MiB, client_env, export_info, nbdinfo_json, qemu_image, qemu_io, sha256_file

pytestmark = pytest.mark.interop


def ovis_export(served: Served, *args: str) -> str:
    return run([*OVIS, "export", *args, "--control", str(served.control)]).stdout


def listed(served: Served) -> dict[str, dict[str, object]]:
    return {e["export-name"]: e for e in nbdinfo_json(served.uri(""), "--list")["exports"]}


def test_added_and_removed_exports(
    serve: Callable[..., Served], image: Path, tmp_path: Path
) -> None:
    need("nbdinfo", "qemu-io")
    served = serve(str(image), "--name", "first", "--port", "0")
    second = make_image(tmp_path / "second.img", 8 * MiB)
    ovis_export(served, "add", "second", str(second), "--description", "added later")
    ovis_export(served, "add", "golden", str(second), "--readonly")
    exports = listed(served)
    assert sorted(exports) == ["first", "golden", "second"]
    assert exports["second"]["description"] == "added later"
    assert exports["second"]["export-size"] == 8 * MiB
    assert exports["golden"]["is_read_only"] is True

    qemu_io(qemu_image(served.uri("second")), "write -P 0x21 4M 64k", "read -P 0x21 4M 64k")
    assert export_info(served.uri("golden"))["export-size"] == 8 * MiB

    ovis_export(served, "remove", "second")
    assert sorted(listed(served)) == ["first", "golden"]
    gone = run(["nbdinfo", served.uri("second")], check=False)
    assert gone.returncode != 0
    assert export_info(served.uri("first"))["export-size"] == 64 * MiB


def test_snapshot_matches_what_clients_wrote(serve: Callable[..., Served], image: Path) -> None:
    need("qemu-io", "qemu-img")
    served = serve(str(image), "--name", "disk", "--port", "0")
    uri = served.uri("disk")
    qemu_io(qemu_image(uri), "write -P 0x31 10M 1M", "write -f -P 0x32 30M 4k")
    (printed,) = ovis_export(served, "snapshot", "disk").split()
    target = Path(printed)
    assert target.parent == image.parent and target != image
    run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(target), uri])
    assert sha256_file(target) == sha256_file(image)
    # Writes after the snapshot change the image, never the snapshot.
    before = sha256_file(target)
    qemu_io(qemu_image(uri), "write -P 0x33 10M 1M")
    assert sha256_file(target) == before
    assert sha256_file(image) != before


USE_AFTER_REMOVAL = """
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print("connected", flush=True)
sys.stdin.readline()  # the export is removed meanwhile
h.pwrite(b"still here", 1 << 20)
h.flush()
assert h.pread(10, 1 << 20) == b"still here"
print("ok", flush=True)
"""


def test_sighup_reloads_the_config(
    serve: Callable[..., Served], image: Path, tmp_path: Path
) -> None:
    need("nbdinfo")
    config = tmp_path / "exports.toml"
    config.write_text(f'[exports.old]\npath = "{image}"\n')
    served = serve("--config", str(config), "--port", "0")
    assert sorted(listed(served)) == ["old"]
    held = subprocess.Popen(
        ["/usr/bin/python3", "-c", USE_AFTER_REMOVAL, served.uri("old")],
        env=client_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert held.stdin is not None and held.stdout is not None
    try:
        assert held.stdout.readline().strip() == "connected"
        config.write_text(f'[exports.new]\npath = "{image}"\ndescription = "reloaded"\n')
        served.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "new" not in (exports := listed(served)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(exports) == ["new"]
        assert exports["new"]["description"] == "reloaded"
        assert run(["nbdinfo", served.uri("old")], check=False).returncode != 0
        # A client connected before the reload keeps its device.
        held.stdin.write("go\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == "ok"
    finally:
        held.stdin.close()
        held.stdout.close()
        held.wait(timeout=10)
    assert held.returncode == 0


def test_snapshots_while_fio_writes(serve: Callable[..., Served], tmp_path: Path) -> None:
    """SIGUSR1 holds writes while it copies: fio must neither fail nor see bad data."""
    need("fio")
    image = make_image(tmp_path / "busy.img", 16 * MiB, pattern=False)
    served = serve(str(image), "--name", "busy", "--port", "0")
    fio = subprocess.Popen(
        [
            "fio", "--name=busy", "--ioengine=nbd", f"--uri={served.uri('busy')}",
            "--rw=randwrite", "--bs=4k", "--size=16M", "--loops=2", "--iodepth=16",
            "--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0",
            "--output-format=terse",
        ],
        env=client_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    time.sleep(0.3)
    for _ in range(2):
        served.signal(signal.SIGUSR1)
        time.sleep(0.2)
    _, errors = fio.communicate(timeout=60)
    assert fio.returncode == 0, errors
    snapshots = sorted(tmp_path.glob("busy.img.*"))
    assert len(snapshots) == 2, (snapshots, served.output())
    for snapshot in snapshots:
        assert snapshot.stat().st_size == 16 * MiB
        data = snapshot.read_bytes()
        for offset in range(0, len(data), 4096):  # each block: untouched or a whole fio block
            block = data[offset : offset + 4096]
            assert block == bytes(4096) or block[:2] == b"\xca\xac", offset
