"""`ovis export snapshot` and SIGUSR1 copy the image, as it is at that moment, beside it."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Command
from tests.conftest import OVIS, Served

from .helpers import RawClient, connected, wait_for_log

MiB = 1 << 20


def snapshots(image: Path) -> set[Path]:
    return set(image.parent.glob(f"{image.name}.snap-*"))


def snapshot_command(served: Served, name: str) -> Path:
    """`ovis export snapshot NAME`: the path of the copy it made."""
    result = subprocess.run(
        [*OVIS, "export", "snapshot", name, "--control", str(served.control)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    (path,) = (Path(line) for line in result.stdout.splitlines())
    return path


def write_pipelined(client: RawClient, blocks: dict[int, bytes]) -> None:
    sent = [client.request(Command.WRITE, off, len(data), 0, data) for off, data in blocks.items()]
    results = client.replies(r.cookie for r in sent)
    assert all(r.error == 0 for r in results.values())


def test_snapshot_command_copies_the_image_while_a_client_writes(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0", "--name", "disk")
    client = connected(served, "disk")
    try:
        write_pipelined(client, {i * MiB: bytes([i]) * 65536 for i in range(2, 40)})
        expected = image.read_bytes()
        path = snapshot_command(served, "disk")
        assert path.parent == image.parent and path in snapshots(image)
        assert path.read_bytes() == expected
        # The client carries on; its later writes reach the image, not the snapshot.
        write_pipelined(client, {0: b"after" * 1000})
        assert image.read_bytes()[:5] == b"after"
        assert path.read_bytes() == expected
    finally:
        client.disconnect()


def test_sigusr1_snapshots_every_export(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--port", "0")
    client = connected(served)
    try:
        write_pipelined(client, {5 * MiB: b"sig" * 4096})
        expected = image.read_bytes()
        served.signal(signal.SIGUSR1)
        wait_for_log(served, "written to")
        (path,) = snapshots(image)
        assert path.read_bytes() == expected
        assert client.call(Command.READ, 5 * MiB, 3).data == b"sig"
    finally:
        client.disconnect()
    assert served.stop() == 0


def test_snapshot_of_a_cow_persist_export_includes_the_overlay(
    serve: Callable[..., Served], image: Path, tmp_path: Path
) -> None:
    base = image.read_bytes()
    overlay = tmp_path / "disk.overlay"
    served = serve(str(image), "--port", "0", "--name", "disk", "--cow-persist", str(overlay))
    client = connected(served, "disk")
    try:
        write_pipelined(client, {0: b"over" * 1024, 3 * MiB + 100: b"lay" * 5000})
        assert client.call(Command.WRITE_ZEROES, 63 * MiB, MiB).error == 0
        assert client.call(Command.TRIM, 10 * MiB, 4096).error == 0
        snap = snapshot_command(served, "disk").read_bytes()
        # The snapshot is what the clients see (the overlay over the base)...
        expected = bytearray(base)
        expected[0:4096] = b"over" * 1024
        expected[3 * MiB + 100 : 3 * MiB + 15100] = b"lay" * 5000
        expected[63 * MiB :] = bytes(MiB)
        expected[10 * MiB : 10 * MiB + 4096] = client.call(Command.READ, 10 * MiB, 4096).data
        assert snap == expected
        # ...while the base itself was never written.
        assert image.read_bytes() == base
    finally:
        client.disconnect()
