"""The coordination tests use the etcd fixtures of tests/conftest.py (etcd1, etcd3,
fresh_etcd3: real members on loopback, see tests/etcd.py)."""

from tests.etcd import EtcdCluster as EtcdCluster  # the test modules import it from here
