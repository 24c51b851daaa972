"""Management errors form one tree and read as one line for people."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ovis.block import BlockError
from ovis.nbd import Errno
from ovis.store import MemoryObjectStore
from ovis.store.testing import FailingStore
from ovis.volume import (
    DataBeyondSize,
    InvalidVolumeArgument,
    NotASnapshot,
    SnapshotReadOnly,
    VolumeError,
    VolumeExists,
    VolumeInUse,
    VolumeIOError,
    VolumeNotFound,
)

from .helpers import OBJ, memory_library


@pytest.mark.parametrize(
    "error",
    [
        VolumeNotFound,
        VolumeExists,
        InvalidVolumeArgument,
        SnapshotReadOnly,
        NotASnapshot,
        VolumeInUse,
        DataBeyondSize,
        VolumeIOError,
    ],
)
def test_every_error_is_a_volume_error(error: type[Exception]) -> None:
    assert issubclass(error, VolumeError)


@pytest.mark.parametrize(
    "name", ["", "a@b", "a/b", " lead", "tab\there", ".", "..", "x" * 256, "é" * 128]
)
def test_bad_names_are_refused_with_a_reason(tmp_path: Path, name: str) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            with pytest.raises(InvalidVolumeArgument) as caught:
                await library.create(name, OBJ, object_size=OBJ)
            assert "\n" not in str(caught.value) and "invalid volume name" in str(caught.value)
            assert isinstance(caught.value, ValueError)

    asyncio.run(main())


def test_messages_name_the_volume(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("vm", OBJ, object_size=OBJ)
            cases = [
                (library.create("vm", OBJ), "volume 'vm' already exists"),
                (library.info("ghost"), "no volume 'ghost'"),
                (library.info("vm@ghost"), "no snapshot 'vm@ghost'"),
                (library.create("x", OBJ, object_size=3000), "invalid object size 3000"),
            ]
            for call, message in cases:
                with pytest.raises(VolumeError) as caught:
                    await call
                assert str(caught.value).startswith(message), str(caught.value)

    asyncio.run(main())


def test_store_failures_surface_as_volume_io_errors(tmp_path: Path) -> None:
    async def main() -> None:
        store = FailingStore(MemoryObjectStore(), fail_at=0)
        async with memory_library(tmp_path, store) as library:
            with pytest.raises(VolumeIOError, match="cannot create 'vm': simulated crash") as e:
                await library.create("vm", OBJ, object_size=OBJ)
            assert isinstance(e.value.__cause__, BlockError)
            assert e.value.__cause__.errno == Errno.EIO
            assert await library.list() == []  # the failed create left no name behind

    asyncio.run(main())


def test_a_closed_library_refuses_calls(tmp_path: Path) -> None:
    async def main() -> None:
        library = memory_library(tmp_path)
        await library.aclose()
        await library.aclose()
        with pytest.raises(VolumeError, match="closed"):
            await library.list()

    asyncio.run(main())
