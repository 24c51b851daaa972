"""The mirror's destination is killed (-9), while copying and while mirroring writes.

Either way the job fails cleanly: `status` says failed and why, the
source's clients never see an error, the source stays intact and writable,
`cancel` works, and a new `start` to a restarted destination completes with
the destination equal to the source.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from ovis.nbd.client import NbdClient
from tests.conftest import Served

from .helpers import MiB
from .live import (
    Processes,
    control,
    mirror_status,
    ovis_cli,
    qemu_img_compare,
    random_image,
    wait_until,
)

SIZE = 32 * MiB


def _empty(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(SIZE)
    return path


async def _write_and_check(uri: str, offset: int, fill: int) -> None:
    client = await NbdClient.connect(uri)
    await client.write(offset, bytes([fill]) * 65536)
    await client.flush()
    assert await client.read(offset, 65536) == bytes([fill]) * 65536
    await client.aclose()


def _failed(served: Served) -> dict[str, object] | None:
    status = mirror_status(served)
    return status if status["state"] == "failed" else None


def test_destination_killed_while_copying(
    serve: Callable[..., Served], processes: Processes, tmp_path: Path
) -> None:
    image = random_image(tmp_path / "src.img", SIZE, 3)
    expected = bytearray(image.read_bytes())
    target = _empty(tmp_path / "dst.img")
    source = serve(str(image), "--name", "disk")
    destination, dest_proc = processes.qemu_nbd(target)
    ovis_cli(source, "migrate", "start", "disk", destination, "--max-rate", "4194304")
    wait_until("some copying", lambda: mirror_status(source)["copied_bytes"] >= MiB)
    dest_proc.kill()
    dest_proc.wait()
    status = wait_until("the job to fail", lambda: _failed(source))
    assert isinstance(status, dict) and status["error"], status
    text = ovis_cli(source, "migrate", "status", "disk").stdout
    assert "failed" in text and "error:" in text and "cancel it" in text

    asyncio.run(_write_and_check(source.uri("disk"), 3 * MiB, 0xA1))  # still writable
    expected[3 * MiB : 3 * MiB + 65536] = b"\xa1" * 65536
    assert control(source, "migrate-cancel")["retired"] is False
    assert image.read_bytes() == expected, "the source changed beyond the client's writes"

    restarted, _ = processes.qemu_nbd(target)
    control(source, "migrate-start", destination=restarted, max_rate=None)
    done = control(source, "migrate-complete")
    assert done["mirror"]["state"] == "done" and done["retired"]
    assert source.stop() == 0
    qemu_img_compare(image, target)


def test_destination_killed_while_mirroring_writes(
    serve: Callable[..., Served], processes: Processes, tmp_path: Path
) -> None:
    image = random_image(tmp_path / "src.img", SIZE, 4)
    target = _empty(tmp_path / "dst.img")
    source = serve(str(image), "--name", "disk")
    destination, dest_proc = processes.qemu_nbd(target)
    control(source, "migrate-start", destination=destination, max_rate=None)
    wait_until("ready", lambda: mirror_status(source)["state"] == "ready")
    dest_proc.kill()
    dest_proc.wait()
    # The write reaches the source; the lost destination only ends the job.
    asyncio.run(_write_and_check(source.uri("disk"), 5 * MiB, 0xB2))
    status = wait_until("the job to fail", lambda: _failed(source))
    assert isinstance(status, dict) and status["error"]
    assert control(source, "migrate-cancel")["mirror"]["state"] == "failed"
    asyncio.run(_write_and_check(source.uri("disk"), 6 * MiB, 0xB3))  # no mirror now

    restarted, _ = processes.qemu_nbd(target)
    control(source, "migrate-start", destination=restarted, max_rate=None)
    assert control(source, "migrate-complete")["mirror"]["state"] == "done"
    assert source.stop() == 0
    qemu_img_compare(image, target)
