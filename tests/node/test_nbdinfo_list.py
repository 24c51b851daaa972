"""`nbdinfo --list` shows every volume and every name@tag snapshot, with its flags."""

from __future__ import annotations

import json

import pytest

from tests.conftest import need, run

from .conftest import MiB, Node

pytestmark = pytest.mark.interop


def test_list_shows_volumes_and_snapshots(node: Node) -> None:
    need("nbdinfo")
    for name, size in (("web", "16M"), ("db", "32M")):
        node.api_call("POST", "/v1/volumes", {"name": name, "size": size})
    node.api_call("POST", "/v1/volumes/db/snapshots", {"tag": "nightly"})

    document = json.loads(run(["nbdinfo", "--list", "--json", node.uri("")]).stdout)
    exports = {e["export-name"]: e for e in document["exports"]}
    assert set(exports) == {"web", "db", "db@nightly"}
    assert exports["db"]["export-size"] == 32 * MiB
    assert exports["db"]["is_read_only"] is False and exports["db"]["can_multi_conn"] is True
    assert exports["db@nightly"]["is_read_only"] is True
    assert exports["db@nightly"]["description"].startswith("snapshot of db")

    # Created after the listing above: the next client sees it at once.
    node.api_call("POST", "/v1/volumes/web/snapshots", {"tag": "t1"})
    listed = run(["nbdinfo", "--list", node.uri("")]).stdout
    assert "web@t1" in listed
