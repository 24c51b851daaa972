"""--single-writer: two hosts never write one export at once; `ovis export handover`.

Real clients on loopback: host A (127.0.0.1) with two connections, as a
multi-connection client has, and host B (127.0.0.2).  A writes on both
connections; B may read but its writes get EPERM.  `handover --to B` lets
B write and A not, and B sees every write A made; `handover --to A` hands
back (a failed migration) on A's open connections.  A bare `handover`
frees the permission for B but not for A until A has detached, and B's
disconnect frees it again.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.block import MemoryDevice
from ovis.block._device import BlockError, Filter
from ovis.nbd.client import NbdClient, NbdError
from ovis.serve import ControlError
from ovis.serve._config import load_config
from ovis.serve._gate import SingleWriter, WriterFilter
from tests.conftest import Served, make_image

from .helpers import MiB
from .live import connect_from, control, ovis_cli

A, B = "127.0.0.1", "127.0.0.2"
K4 = 4096


async def expect_eperm(request: object) -> None:
    with pytest.raises(NbdError) as caught:
        await request  # type: ignore[misc]
    assert caught.value.errno == errno.EPERM


def test_handover_between_two_hosts(serve: Callable[..., Served], tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 8 * MiB)
    served = serve(str(image), "--name", "disk", "--single-writer")
    uri = served.uri("disk")
    loop = asyncio.new_event_loop()
    run = loop.run_until_complete

    async def clients() -> tuple[NbdClient, NbdClient, NbdClient]:
        a1, a2 = await connect_from(uri, A), await connect_from(uri, A)
        return a1, a2, await connect_from(uri, B)

    try:
        a1, a2, b = run(clients())
        run(a1.write(0, b"\xa1" * K4))
        run(a2.write(K4, b"\xa2" * K4))  # a second connection of the same host
        run(expect_eperm(b.write(2 * K4, b"\xb0" * K4)))
        run(expect_eperm(b.zero(2 * K4, K4)))
        run(expect_eperm(b.trim(2 * K4, K4)))
        assert run(b.read(0, 2 * K4)) == b"\xa1" * K4 + b"\xa2" * K4  # reading is fine
        assert control(served, "writer")["writer"] == A

        out = ovis_cli(served, "export", "handover", "disk", "--to", B)
        assert f"taken from {A}" in out.stdout and f"writer {B}" in out.stdout
        run(expect_eperm(a1.write(0, b"\xff" * K4)))
        run(expect_eperm(a2.zero(0, K4)))
        run(b.write(2 * K4, b"\xb1" * K4))
        assert run(b.read(0, 3 * K4)) == b"\xa1" * K4 + b"\xa2" * K4 + b"\xb1" * K4
        a3 = run(connect_from(uri, A))  # a new connection of A: still not the writer
        run(expect_eperm(a3.write(0, b"\xff" * K4)))
        status = json.loads(ovis_cli(served, "export", "writer", "disk", "--json").stdout)
        assert status["writer"] == B and status["hosts"] == {A: 3, B: 1}

        control(served, "handover", to=A)  # the migration failed: A resumes
        run(a1.write(3 * K4, b"\xa3" * K4))
        run(expect_eperm(b.write(0, b"\xff" * K4)))

        control(served, "handover", to=None)  # A let go: B may take it, A may not
        run(expect_eperm(a2.write(0, b"\xff" * K4)))
        run(b.write(4 * K4, b"\xb4" * K4))
        assert control(served, "writer")["writer"] == B
        run(b.aclose())
        run(asyncio.sleep(0.2))  # the server sees B go: the permission is free
        assert control(served, "writer") == {
            "export": "disk",
            "writer": None,
            "fenced": A,
            "hosts": {A: 3},
        }
        run(expect_eperm(a3.write(0, b"\xff" * K4)))  # A still counts as handed over
        for client in (a1, a2, a3):
            run(client.aclose())
        run(asyncio.sleep(0.2))
        a4 = run(connect_from(uri, A))  # A detached and came back: it may write again
        run(a4.write(5 * K4, b"\xa5" * K4))
        run(a4.aclose())
    finally:
        loop.close()
    assert served.stop() == 0
    expected = b"".join(bytes([x]) * K4 for x in (0xA1, 0xA2, 0xB1, 0xA3, 0xB4, 0xA5))
    assert image.read_bytes()[: 6 * K4] == expected


def test_handover_needs_single_writer(serve: Callable[..., Served], tmp_path: Path) -> None:
    served = serve(str(make_image(tmp_path / "disk.img", MiB)), "--name", "disk")
    with pytest.raises(ControlError, match="is not single-writer"):
        control(served, "handover", to=None)
    with pytest.raises(ControlError, match="not an IP address"):
        control(served, "handover", to="host-b")
    config = tmp_path / "exports.toml"
    config.write_text(f'[exports.disk]\npath = "{tmp_path / "disk.img"}"\nsingle_writer = true\n')
    assert load_config(config)[0][0].single_writer


class _Slow(Filter):
    """Writes that take a while, so a handover starts while they are in flight."""

    async def write(self, offset: int, data: object, *, fua: bool = False) -> None:
        await asyncio.sleep(0.05)
        await self.next.write(offset, data, fua=fua)  # type: ignore[arg-type]


def test_handover_waits_for_admitted_writes() -> None:
    async def main() -> None:
        disk = MemoryDevice(MiB)
        flushed: list[bytes] = []

        async def flush() -> None:
            flushed.append(bytes(await disk.read(0, 4096)))

        writers = SingleWriter("disk")
        a = WriterFilter(_Slow(disk), writers, A)
        b = WriterFilter(disk, writers, "::ffff:127.0.0.2")  # v4-mapped: the same host B
        assert b.host == B
        pending = asyncio.create_task(a.write(0, b"\xaa" * 4096))
        await asyncio.sleep(0)
        assert writers.holder == A
        previous = await writers.handover(flush, B)
        assert previous == A and pending.done()
        assert flushed == [b"\xaa" * 4096], "the flush came after A's admitted write"
        with pytest.raises(BlockError):
            await a.write(0, b"\x00" * 4096)
        await b.write(0, b"\xbb" * 4096)
        await a.aclose()
        await b.aclose()
        assert writers.status() == {"export": "disk", "writer": None, "fenced": None, "hosts": {}}

    asyncio.run(main())
