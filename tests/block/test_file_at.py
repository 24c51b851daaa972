"""`file_at`: a stack offers its file only while a plain pread/pwrite is exactly right.

The server serves READ and WRITE straight on that descriptor, skipping every
layer; a layer that must see a request (to refuse, hold, count or track it)
must answer -1 at that moment.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ovis.block import CheckedDevice, CowFilter, FileDevice, MemoryDevice, ReadOnlyFilter
from ovis.migrate import MirrorFilter
from ovis.serve._gate import SingleWriter, WriteGate, WriterFilter

MiB = 1 << 20


def _file(tmp_path: Path, *, readonly: bool = False) -> FileDevice:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(4 * MiB))
    return FileDevice(path, readonly=readonly)


def _offers(device: CheckedDevice | FileDevice | WriteGate, *, write: bool) -> bool:
    return device.file_at(0, 4096, write=write) >= 0


def test_a_file_offers_itself_and_memory_does_not(tmp_path: Path) -> None:
    file = _file(tmp_path)
    assert file.file_at(0, 4096, write=False) >= 0
    assert file.file_at(0, 4096, write=True) >= 0
    assert MemoryDevice(MiB).file_at(0, 4096, write=False) == -1


def test_checked_device_offers_nothing_it_would_refuse(tmp_path: Path) -> None:
    checked = CheckedDevice(_file(tmp_path))
    assert checked.file_at(0, MiB, write=True) >= 0
    assert checked.file_at(4 * MiB - 1, 1, write=False) >= 0
    for offset, length in [(4 * MiB - 1, 2), (-1, 4), (0, 0), (4 * MiB, 1), (0, 33 * MiB)]:
        assert checked.file_at(offset, length, write=False) == -1, (offset, length)
    readonly = CheckedDevice(_file(tmp_path, readonly=True))
    assert readonly.file_at(0, 4096, write=False) >= 0
    assert readonly.file_at(0, 4096, write=True) == -1


def test_read_only_and_cow_layers_keep_writes_for_themselves(tmp_path: Path) -> None:
    file = _file(tmp_path)
    assert ReadOnlyFilter(file).file_at(0, 4096, write=False) >= 0
    assert ReadOnlyFilter(file).file_at(0, 4096, write=True) == -1
    cow = CowFilter(ReadOnlyFilter(file))
    assert cow.file_at(0, 4096, write=False) == -1  # written blocks live in the overlay


def test_a_held_or_retired_gate_offers_reads_but_not_writes(tmp_path: Path) -> None:
    async def scenario() -> None:
        gate = WriteGate(_file(tmp_path))
        assert _offers(gate, write=True)
        async with gate.held():
            assert not _offers(gate, write=True)
            assert _offers(gate, write=False)
        assert _offers(gate, write=True)
        async with gate.held():
            gate.retire()
        assert not _offers(gate, write=True)
        assert _offers(gate, write=False)

    asyncio.run(scenario())


def test_a_mirror_job_sees_every_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        mirror = MirrorFilter(_file(tmp_path))
        assert mirror.file_at(0, 4096, write=True) >= 0
        await mirror.attach(64 * 1024)  # tracking: each write must mark its blocks dirty
        assert mirror.file_at(0, 4096, write=True) == -1
        assert mirror.file_at(0, 4096, write=False) >= 0
        mirror.detach()
        assert mirror.file_at(0, 4096, write=True) >= 0

    asyncio.run(scenario())


def test_single_writer_admits_every_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        conn = WriterFilter(_file(tmp_path), SingleWriter("disk"), "192.0.2.1")
        assert conn.file_at(0, 4096, write=True) == -1
        assert conn.file_at(0, 4096, write=False) >= 0

    asyncio.run(scenario())
