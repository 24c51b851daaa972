"""Coordinators for the cluster tests: real etcd members on loopback, or a SQLite file.

`coord_url` runs a test on both backends (a SQLite file in tmp_path, and the
module's 1-member etcd with every `ovis/` key wiped first); `sqlite_url` is
the SQLite one alone.  The etcd fixtures are in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ovis.coord import open_coordinator
from tests.etcd import EtcdCluster


def etcd_url(etcd: EtcdCluster) -> str:
    """The cluster's URL as `--cluster` takes it: etcd://HOST:PORT,..."""
    return "etcd://" + ",".join(e.removeprefix("http://") for e in etcd.endpoints)


async def wipe(url: str) -> None:
    """Delete every ovis/ key, so tests sharing one etcd start from nothing."""
    async with open_coordinator(url) as coord:
        kvs, _ = await coord.list("ovis/")
        for kv in kvs:
            await coord.delete_if(kv.key, kv.mod_revision)


@pytest.fixture(params=["sqlite", "etcd"])
def coord_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh coordinator URL: a SQLite file, then a wiped etcd."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/coord.db"
    url = etcd_url(request.getfixturevalue("etcd1"))
    asyncio.run(wipe(url))
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path}/coord.db"
