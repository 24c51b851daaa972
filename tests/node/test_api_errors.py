"""The management API answers errors as {"error": one line} with 400, 404 or 409."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from .conftest import MiB, Node


def test_api_status_codes_and_error_bodies(node: Node) -> None:
    status, body = node.api_call("POST", "/v1/volumes", {"name": "vm", "size": 16 * MiB})
    assert status == 201 and body["spec"] == "vm" and body["size"] == 16 * MiB
    assert node.api_call("POST", "/v1/volumes/vm/snapshots", {"tag": "s1"})[0] == 201
    node.write("vm", 12 * MiB, b"x" * 512)

    cases = [
        ("POST", "/v1/volumes", {"name": "vm", "size": "1G"}, 409, "volume-exists"),
        ("POST", "/v1/volumes", {"name": "v2", "size": 1000}, 400, "invalid-volume-argument"),
        ("POST", "/v1/volumes", {"name": "v2", "size": "big"}, 400, "bad-request"),
        ("POST", "/v1/volumes", {"size": "1G"}, 400, "bad-request"),
        ("POST", "/v1/volumes", [1, 2], 400, "bad-request"),
        ("GET", "/v1/volumes/nope", None, 404, "volume-not-found"),
        ("GET", "/v1/volumes/vm@nope", None, 404, "volume-not-found"),
        ("DELETE", "/v1/volumes/nope", None, 404, "volume-not-found"),
        ("POST", "/v1/volumes/vm/snapshots", {"tag": "s1"}, 409, "volume-exists"),
        ("POST", "/v1/volumes/vm/clone", {"name": "c"}, 400, "not-a-snapshot"),
        ("POST", "/v1/volumes/vm@s1/clone", {"name": "vm"}, 409, "volume-exists"),
        ("POST", "/v1/volumes/vm/rollback", {"tag": "zz"}, 404, "volume-not-found"),
        ("POST", "/v1/volumes/vm/resize", {"size": "4M"}, 409, "data-beyond-size"),
        ("POST", "/v1/volumes/vm/resize", {"size": "4M", "force": "yes"}, 400, "bad-request"),
        ("POST", "/v1/volumes/vm@s1/resize", {"size": "64M"}, 400, "snapshot-read-only"),
        ("GET", "/v1/diff?old=vm@s1", None, 400, "bad-request"),
        ("GET", "/v1/no/such/route", None, 404, "http"),
        ("PUT", "/v1/volumes", None, 405, "http"),
    ]
    for method, path, request_body, status, kind in cases:
        got_status, got = node.api_call(method, path, request_body)
        assert (got_status, got.get("kind")) == (status, kind), (method, path, got)
        assert isinstance(got["error"], str) and "\n" not in got["error"] and got["error"]

    # A body that is not JSON at all.
    request = urllib.request.Request(
        node.api + "/v1/volumes", data=b"{nope", method="POST", headers={"X": "y"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        opener.open(request, timeout=10)
        raise AssertionError("accepted a body that is not JSON")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and "not JSON" in json.loads(exc.read())["error"]


def test_node_reports_where_it_serves(node: Node) -> None:
    status, about = node.api_call("GET", "/v1/node")
    assert status == 200
    assert about["nbd_uri"] == node.uri("{name}")
    assert about["api"] == node.api and about["data_dir"] == str(node.data_dir.resolve())
    assert about["connections"] == 0 and about["pid"] == node.proc.pid
