"""SqliteCoordinator specifics: durability, history trimming, reboots, several processes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from ovis.coord import Compacted, CompareFailed, Coordinator, SqliteCoordinator
from ovis.coord import _sqlite as sqlite_module


async def _increment(coord: Coordinator, key: str, times: int) -> None:
    for _ in range(times):
        while True:
            kv = await coord.get(key)
            value, rev = (int(kv.value), kv.mod_revision) if kv else (0, 0)
            try:
                await coord.put_if(key, str(value + 1).encode(), rev)
                break
            except CompareFailed:
                await asyncio.sleep(0)


def test_keys_and_revisions_survive_a_reopen(tmp_path: Path) -> None:
    async def main() -> None:
        async with SqliteCoordinator(tmp_path / "c.db") as coord:
            rev = await coord.put("/k", b"v")
        async with SqliteCoordinator(tmp_path / "c.db") as coord:
            kv = await coord.get("/k")
            assert kv is not None and (kv.value, kv.mod_revision) == (b"v", rev)
            assert await coord.put("/k", b"w") > rev

    asyncio.run(main())


def test_history_is_trimmed_and_a_watch_behind_it_gets_compacted(tmp_path: Path) -> None:
    async def main() -> None:
        async with SqliteCoordinator(tmp_path / "c.db", history=10) as coord:
            first = await coord.put("/h", b"0")
            for i in range(1, 130):
                last = await coord.put("/h", str(i).encode())
            events = coord.watch("/h", first)
            with pytest.raises(Compacted, match="list again") as info:
                await anext(events)
            assert first < info.value.compact_revision <= last - 9
            await events.aclose()
            recent = coord.watch("/h", last - 5)
            assert (await anext(recent)).revision == last - 5
            await recent.aclose()

    asyncio.run(main())


def test_sessions_do_not_survive_a_reboot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with SqliteCoordinator(tmp_path / "c.db") as coord:
            session = await coord.open_session(3600)
            await coord.put("/member", b"me", session=session)
            await coord.close_session(session, revoke=False)  # then the machine reboots
        monkeypatch.setattr(sqlite_module, "_boot_id", lambda: "another-boot")
        async with SqliteCoordinator(tmp_path / "c.db") as coord:
            assert await coord.get("/member") is None

    asyncio.run(main())


CHILD = """
import asyncio, sys
from ovis.coord import CompareFailed, SqliteCoordinator
async def main():
    async with SqliteCoordinator(sys.argv[1]) as coord:
        for _ in range(40):
            while True:
                kv = await coord.get("/counter")
                value, rev = (int(kv.value), kv.mod_revision) if kv else (0, 0)
                try:
                    await coord.put_if("/counter", str(value + 1).encode(), rev)
                    break
                except CompareFailed:
                    pass
asyncio.run(main())
"""


def test_two_processes_share_one_file_without_lost_updates(tmp_path: Path) -> None:
    path = tmp_path / "c.db"

    async def main() -> None:
        await SqliteCoordinator(path).aclose()  # create the schema before both race
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, str(path))
        async with SqliteCoordinator(path) as coord:
            await _increment(coord, "/counter", 40)
            assert await child.wait() == 0
            kv = await coord.get("/counter")
            assert kv is not None and kv.value == b"80", kv

    asyncio.run(main())
