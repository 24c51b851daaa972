"""`ovis export add|remove|list --control PATH` change a running server; its clients carry on."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.nbd import Command
from ovis.nbd._handshake_client import OptionRefused
from ovis.nbd.client import list_exports
from tests.conftest import OVIS, Served, make_image

from .helpers import PATTERN, assert_serving, connected


def ovis_export(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OVIS, "export", *args, "--control", str(served.control)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_add_list_remove_while_a_client_keeps_working(
    serve: Callable[..., Served], image: Path, tmp_path: Path
) -> None:
    served = serve(str(image), "--port", "0", "--name", "disk")
    other = make_image(tmp_path / "other.img", 8 << 20)
    steady = connected(served, "disk")
    try:
        added = ovis_export(
            served, "add", "extra", str(other), "--readonly", "--description", "added live"
        )
        assert added.returncode == 0, added.stderr
        assert steady.call(Command.WRITE, 4096, 5, data=b"still").error == 0

        listed = ovis_export(served, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        entries = {e["name"]: e for e in json.loads(listed.stdout)}
        assert set(entries) == {"disk", "extra"}
        assert entries["extra"]["readonly"] and entries["extra"]["path"] == str(other)
        plain = ovis_export(served, "list").stdout.splitlines()
        assert f"extra\treadonly\t{other}\tadded live" in plain

        assert asyncio.run(list_exports(served.uri())) == [("disk", ""), ("extra", "added live")]
        assert_serving(served, "extra")

        removed = ovis_export(served, "remove", "disk")
        assert removed.returncode == 0, removed.stderr
        # The client connected to the removed export keeps its session...
        assert steady.call(Command.READ, 4096, 5).data == b"still"
        assert steady.call(Command.FLUSH).error == 0
        # ...while new clients can no longer reach it.
        with pytest.raises(OptionRefused, match="ERR_UNKNOWN"):
            assert_serving(served, "disk")
        assert asyncio.run(list_exports(served.uri())) == [("extra", "added live")]
        assert [e["name"] for e in json.loads(ovis_export(served, "list", "--json").stdout)] == [
            "extra"
        ]
    finally:
        steady.disconnect()
    assert image.read_bytes()[4096:4101] == b"still"


def test_control_errors_are_one_line(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--port", "0", "--name", "disk")
    for args, message in [
        (("add", "disk", str(image)), "already exists"),
        (("remove", "nonesuch"), "no export named 'nonesuch'"),
        (("snapshot", "nonesuch"), "no export named 'nonesuch'"),
    ]:
        result = ovis_export(served, *args)
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert_serving(served, "disk", PATTERN)
