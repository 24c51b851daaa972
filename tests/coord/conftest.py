"""Real etcd members on loopback for the coordination tests (see tests/etcd.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd import EtcdCluster as EtcdCluster  # the test modules import it from here
from tests.etcd import etcd_cluster


@pytest.fixture(scope="module")
def etcd1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    yield from etcd_cluster(tmp_path_factory.mktemp("etcd1"), 1)


@pytest.fixture(scope="module")
def etcd3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    yield from etcd_cluster(tmp_path_factory.mktemp("etcd3"), 3)


@pytest.fixture
def fresh_etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A 3-member cluster of its own, for tests that kill members."""
    yield from etcd_cluster(tmp_path, 3)
