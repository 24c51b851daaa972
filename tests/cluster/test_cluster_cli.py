"""`ovis cluster format|info|nodes` as a user runs them, and the --cluster URL forms."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ovis.cluster._membership import ClusterNode
from ovis.cluster._model import NodeInfo
from ovis.coord import EtcdCoordinator, SqliteCoordinator, open_coordinator
from tests.conftest import OVIS


def ovis(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OVIS, *args], capture_output=True, text=True, timeout=30)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


async def with_nodes(url: str, count: int, *commands: list[str]) -> list[str]:
    """Run `ovis` commands (in a thread) while `count` nodes are members; their stdouts."""
    coords = [open_coordinator(url) for _ in range(count)]
    nodes = []
    for i, coord in enumerate(coords):
        me = NodeInfo(f"n{i}", f"z{i}", 1.0 + i, f"127.0.0.1:{7000 + i}", "[::1]:10809")
        nodes.append(ClusterNode(coord, me, settle=0.05))
    try:
        for node in nodes:
            await node.start()
        async with asyncio.timeout(5):
            while any(len(n.epoch.members) != count for n in nodes):
                await asyncio.sleep(0.01)
        results = await asyncio.gather(*(asyncio.to_thread(ovis, *c) for c in commands))
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        return [r.stdout for r in results]
    finally:
        for node, coord in zip(nodes, coords, strict=True):
            await node.aclose()
            await coord.aclose()


def test_format_then_info_shows_config_members_and_history(coord_url: str) -> None:
    formatted = ovis("cluster", "format", "--cluster", coord_url, "--copies", "2")
    assert formatted.returncode == 0, formatted.stderr
    assert formatted.stdout.startswith("formatted cluster ") and "with 2 copies" in formatted.stdout
    human, raw = asyncio.run(
        with_nodes(
            coord_url,
            2,
            ["cluster", "info", "--cluster", coord_url],
            ["cluster", "info", "--cluster", coord_url, "--json"],
        )
    )
    data = json.loads(raw)
    assert data["cluster_id"] in formatted.stdout and data["copies"] == 2
    assert data["epoch"]["epoch"] == 2
    assert [m["id"] for m in data["epoch"]["members"]] == ["n0", "n1"]
    assert [(r["epoch"], r["joined"]) for r in data["history"]] == [(1, ["n0"]), (2, ["n1"])]
    assert [n["id"] for n in data["live"]] == ["n0", "n1"]
    assert f"cluster     {data['cluster_id']}" in human
    assert "epoch       2 (started " in human and "live nodes  n0, n1" in human
    assert "n1  z1         2  127.0.0.1:7001  [::1]:10809" in human
    assert any(line.startswith("    2  ") and line.endswith("n0, n1   joined n1")
               for line in human.splitlines())  # fmt: skip


def test_nodes_lists_the_live_nodes(coord_url: str) -> None:
    assert ovis("cluster", "format", "--cluster", coord_url, "--copies", "1").returncode == 0
    empty = ovis("cluster", "nodes", "--cluster", coord_url, "--json")
    assert empty.returncode == 0 and json.loads(empty.stdout) == []
    human, raw = asyncio.run(
        with_nodes(
            coord_url,
            2,
            ["cluster", "nodes", "--cluster", coord_url],
            ["cluster", "nodes", "--cluster", coord_url, "--json"],
        )
    )
    assert [n["id"] for n in json.loads(raw)] == ["n0", "n1"]
    assert json.loads(raw)[1]["peer"] == "127.0.0.1:7001"
    lines = human.splitlines()
    assert lines[0].split() == ["ID", "ZONE", "WEIGHT", "PEER", "NBD"]
    assert lines[1].split() == ["n0", "z0", "1", "127.0.0.1:7000", "[::1]:10809"]
    assert len(lines) == 3


def test_the_cluster_url_can_come_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path}/c.db"
    result = subprocess.run(
        [*OVIS, "cluster", "format", "--copies", "3"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"OVIS_CLUSTER": url, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "with 3 copies" in result.stdout


def test_formatting_twice_fails_in_one_line(sqlite_url: str) -> None:
    assert ovis("cluster", "format", "--cluster", sqlite_url, "--copies", "2").returncode == 0
    again = ovis("cluster", "format", "--cluster", sqlite_url, "--copies", "3")
    assert again.returncode == 1
    assert "already formatted" in one_line_error(again) and "2 copies" in again.stderr


def test_info_before_format_gives_the_format_hint(sqlite_url: str) -> None:
    result = ovis("cluster", "info", "--cluster", sqlite_url)
    assert result.returncode == 1
    assert "run `ovis cluster format --cluster URL --copies N`" in one_line_error(result)


def test_copies_outside_1_to_8_is_a_usage_error(sqlite_url: str) -> None:
    result = ovis("cluster", "format", "--cluster", sqlite_url, "--copies", "9")
    assert result.returncode == 2 and "--copies" in result.stderr


def test_a_bad_url_is_a_usage_error_showing_the_accepted_forms() -> None:
    result = ovis("cluster", "info", "--cluster", "etcd://127.0.0.1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "bad coordinator URL" in error and "etcd://HOST:PORT[,HOST:PORT...]" in error


def test_an_unreachable_etcd_fails_in_one_line_within_seconds() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    result = ovis("cluster", "info", "--cluster", f"etcd://127.0.0.1:{port}")
    assert time.monotonic() - started < 8
    assert result.returncode == 1
    error = one_line_error(result)
    assert f"etcd://127.0.0.1:{port}" in error and "cannot connect" in error


# -- open_coordinator -----------------------------------------------------------


def test_open_coordinator_accepts_the_documented_forms(tmp_path: Path) -> None:
    async def main() -> None:
        etcd = open_coordinator("etcd://127.0.0.1:2379,localhost:2380")
        assert isinstance(etcd, EtcdCoordinator)
        assert etcd.endpoint == "http://127.0.0.1:2379"
        await etcd.aclose()
        for url in (f"sqlite://{tmp_path}/a.db", f"sqlite:{tmp_path}/b.db"):
            async with open_coordinator(url) as coord:
                assert isinstance(coord, SqliteCoordinator)
                await coord.put("k", b"v")
        assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()

    asyncio.run(main())


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:2379",
        "etcd://127.0.0.1",
        "etcd://127.0.0.1:0",
        "etcd://:2379",
        "etcd://h:2379/x",
        "etcd://h:1,",
        "db.sqlite",
        "sqlite:",
        "sqlite://rel.db",
    ],
)
def test_open_coordinator_refuses_other_urls_in_one_line(url: str) -> None:
    with pytest.raises(ValueError, match=r"bad coordinator URL .*; use etcd://HOST:PORT") as info:
        open_coordinator(url)
    assert "\n" not in str(info.value)
