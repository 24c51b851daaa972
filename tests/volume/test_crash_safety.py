"""A crash at any store call leaves no metadata pointing at missing data.

Each scenario runs once to completion to learn the state after it, then once
per store call with the node "dying" at that call (FailingStore): the
MemoryObjectStore then keeps, for each object not synced since its last
change, either its synced or its latest state.  On the survivor: every
inode the catalog names and every object those inodes name exists; every
volume reads, object by object, as before or as after the operation; and
gc() removes exactly the leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from ovis.block import BlockError
from ovis.store import MemoryObjectStore, ObjectStore
from ovis.store.testing import FailingStore
from ovis.volume import VolumeCatalog, VolumeError, VolumeLibrary

from .helpers import check_references, pattern

OBJECT = 4096
Scenario = Callable[[VolumeLibrary], Awaitable[None]]


async def _setup(library: VolumeLibrary) -> None:
    await library.create("vm", 6 * OBJECT, object_size=OBJECT)
    volume = await library.open("vm")
    await volume.write(0, pattern(4 * OBJECT, 1))
    await library.snapshot("vm", "s1")
    await volume.write(OBJECT, pattern(OBJECT, 2))
    await volume.aclose()
    await library.clone("vm@s1", "clone")


async def _write_and_flush(library: VolumeLibrary) -> None:
    volume = await library.open("vm")
    await volume.write(0, pattern(OBJECT, 3))  # copy-up of a shared object
    await volume.write(OBJECT + 100, b"overwrite")  # an owned object
    await volume.write(5 * OBJECT, pattern(OBJECT, 4))  # a new object
    await volume.trim(2 * OBJECT, OBJECT)  # forget a shared object
    await volume.flush()
    await volume.aclose()


async def _trim_owned_and_flush(library: VolumeLibrary) -> None:
    volume = await library.open("vm")
    await volume.trim(OBJECT, OBJECT)
    await volume.aclose()


async def _snapshot_while_open(library: VolumeLibrary) -> None:
    volume = await library.open("vm")
    await volume.write(3 * OBJECT, pattern(OBJECT, 5))
    await library.snapshot("vm", "s2")
    await volume.write(4 * OBJECT, pattern(OBJECT, 6))
    await volume.aclose()


async def _delete_shared_snapshot(library: VolumeLibrary) -> None:
    await library.delete("vm@s1")


async def _delete_volume(library: VolumeLibrary) -> None:
    await library.delete("vm")


async def _rollback(library: VolumeLibrary) -> None:
    await library.rollback("vm", "s1")


async def _clone(library: VolumeLibrary) -> None:
    await library.clone("vm@s1", "another")


async def _shrink(library: VolumeLibrary) -> None:
    await library.resize("vm", OBJECT + 512, force=True)


async def _create(library: VolumeLibrary) -> None:
    await library.create("fresh", 2 * OBJECT, object_size=OBJECT)


SCENARIOS: dict[str, Scenario] = {
    "write-and-flush": _write_and_flush,
    "trim-owned": _trim_owned_and_flush,
    "snapshot-while-open": _snapshot_while_open,
    "delete-shared-snapshot": _delete_shared_snapshot,
    "delete-volume": _delete_volume,
    "rollback": _rollback,
    "clone": _clone,
    "shrink": _shrink,
    "create": _create,
}


async def _contents(library: VolumeLibrary) -> dict[str, bytes]:
    out = {}
    for info in await library.list():
        volume = await library.open(info.spec)
        out[info.spec] = bytes(await volume.read(0, volume.size))
        await volume.aclose()
    return out


async def _overwrite(library: VolumeLibrary, spec: str) -> bytes:
    volume = await library.open(spec)
    data = pattern(volume.size, 9)
    await volume.write(0, data)
    await volume.aclose()
    return data


def _library(store: ObjectStore, catalog: Path) -> VolumeLibrary:
    return VolumeLibrary(store, VolumeCatalog(catalog, fsync=False))


async def _run(
    golden: MemoryObjectStore,
    golden_catalog: Path,
    work: Path,
    scenario: Scenario,
    fail_at: int | None,
    seed: int,
) -> tuple[MemoryObjectStore, Path, bool, int]:
    """Run `scenario` dying at store call `fail_at`; return the survivor and its catalog."""
    catalog = work / f"catalog-{fail_at}.sqlite"
    shutil.copy(golden_catalog, catalog)
    store = golden.crash()
    failing = FailingStore(store, fail_at)
    library = _library(failing, catalog)
    completed = True
    try:
        await scenario(library)
    except (VolumeError, BlockError):
        assert failing.dead, "the scenario failed without a crash"
        completed = False
    finally:
        failing.dead = True  # nothing more reaches the store: the node is gone
        with contextlib.suppress(VolumeError, BlockError):
            await library.aclose()
    return store.crash(random.Random(seed)), catalog, completed, failing.mutations


def _same_per_object(got: bytes, before: bytes | None, after: bytes | None, spec: str) -> None:
    for at in range(0, len(got), OBJECT):
        chunk = got[at : at + OBJECT]
        options = [s[at : at + OBJECT] for s in (before, after) if s is not None]
        assert any(chunk == o[: len(chunk)].ljust(len(chunk), b"\0") for o in options), (
            f"{spec}: object {at // OBJECT} is neither as before nor as after"
        )


@pytest.mark.parametrize("name", SCENARIOS)
def test_crash_at_every_store_call_is_safe(tmp_path: Path, name: str) -> None:
    scenario = SCENARIOS[name]

    async def main() -> None:
        store = MemoryObjectStore()
        golden_catalog = tmp_path / "golden.sqlite"
        library = _library(store, golden_catalog)
        await _setup(library)
        before = await _contents(library)
        await library.aclose()
        golden = store.crash()

        survivor, catalog, completed, calls = await _run(
            golden, golden_catalog, tmp_path, scenario, None, 0
        )
        assert completed
        async with _library(survivor, catalog) as library:
            after = await _contents(library)

        for fail_at in range(calls):
            survivor, catalog, completed, _ = await _run(
                golden, golden_catalog, tmp_path, scenario, fail_at, fail_at
            )
            async with _library(survivor, catalog) as library:
                named = await check_references(library)
                got = await _contents(library)
                assert set(got) in (set(before), set(after)), f"crash at {fail_at}: {set(got)}"
                for spec, data in got.items():
                    _same_per_object(data, before.get(spec), after.get(spec), spec)
                if "vm" in got:  # writing over leaked objects: versions must be newer
                    got["vm"] = await _overwrite(library, "vm")
                    named = await check_references(library)
                await library.gc()
                assert set(await survivor.list()) == named, f"crash at {fail_at}: gc missed"
                assert await _contents(library) == got, f"crash at {fail_at}: gc lost data"

    asyncio.run(main())
