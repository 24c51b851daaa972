"""Wrong input gets one line, `Error: ...`, exit status 1, and never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import Node


def test_bad_input_gets_a_one_line_error(node: Node, tmp_path: Path) -> None:
    node.api_call("POST", "/v1/volumes", {"name": "vm", "size": "32M"})
    node.api_call("POST", "/v1/volumes/vm/snapshots", {"tag": "s1"})
    node.write("vm", 20 * 1024 * 1024, b"\x7f" * 4096)

    cases = {
        ("create", "vm", "1G"): "volume 'vm' already exists",
        ("create", "x", "ten"): "invalid size: 'ten' is not a size",
        ("create", "a@b", "1G"): "invalid volume name 'a@b'",
        ("info", "nope"): "no volume 'nope'",
        ("info", "vm@nope"): "no snapshot 'vm@nope'",
        ("snapshot", "vm", "--tag", "s1"): "snapshot vm@s1 already exists",
        ("clone", "vm", "copy"): "clone needs a snapshot NAME@TAG",
        ("rollback", "vm", "--to", "nope"): "no snapshot 'vm@nope'",
        ("resize", "vm", "8M"): "holds data past 8.0 MiB; shrinking would drop it (use --force)",
        ("export", "ghost", str(tmp_path / "out.img")): "no volume 'ghost'",
        ("import", "vm@s1", str(tmp_path)): "cannot import into a snapshot",
        ("import", "new", str(tmp_path / "missing.img")): "cannot open",
    }
    errors = node.vdi_errors(list(cases))
    for (args, expected), error in zip(cases.items(), errors, strict=True):
        assert expected in error, (args, error)
    assert node.vdi_json("resize", "vm", "8M", "--force")["size"] == 8 * 1024 * 1024
    assert not (tmp_path / "out.img").exists()


def test_no_node_running_gets_a_hint_to_start_one() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ovis", "vdi", "list", "--node", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: cannot reach the ovis node at http://127.0.0.1:9")
    assert "ovis node start --data DIR" in result.stderr
