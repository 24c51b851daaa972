"""SIGTERM drains clients, flushes and closes every volume, and exits 0."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ovis.nbd.client import NbdClient

from .conftest import MiB, Node


def test_sigterm_flushes_unflushed_writes(start_node: Callable[..., Node]) -> None:
    node = start_node()
    node.api_call("POST", "/v1/volumes", {"name": "vm", "size": 8 * MiB})

    async def write_without_flush_then_stop() -> None:
        client = await NbdClient.connect(node.uri("vm"))
        await client.write(2 * MiB, b"\x5d" * MiB)  # acknowledged, never flushed
        assert node.stop() == 0  # the client is still connected
        await client.aclose()

    asyncio.run(write_without_flush_then_stop())
    assert "stopping: draining" in node.output()
    node = start_node(node.data_dir)
    assert node.read("vm", 2 * MiB, MiB) == b"\x5d" * MiB


def test_one_node_per_data_directory(node: Node, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ovis", "node", "start", "--data", str(node.data_dir),
         "--port", "0", "--api-port", "0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot use ") and "in use" in result.stderr
    assert result.stderr.count("\n") == 1
    result = subprocess.run(
        [sys.executable, "-m", "ovis", "node", "start", "--data", str(tmp_path / "other"),
         "--port", str(node.port), "--api-port", "0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: port {node.port} on 127.0.0.1 is in use; pick another with --port"
    )
