"""BLOCK_STATUS without a negotiated meta context gets EINVAL; with one, it answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.nbd import Command, Errno, StateFlag
from tests.conftest import Served

from .helpers import assert_serving, connected


@pytest.mark.parametrize(
    ("structured", "contexts"),
    [(False, ()), (True, ()), (True, ("qemu:dirty-bitmap:x",))],
    ids=["simple", "structured-no-context", "unknown-context"],
)
def test_block_status_without_a_context_gets_einval(
    serve: Callable[..., Served], image: Path, structured: bool, contexts: tuple[str, ...]
) -> None:
    served = serve(str(image), "--port", "0")
    client = connected(served, structured=structured, meta_contexts=contexts)
    try:
        assert client.connected is not None and not client.connected.meta_contexts
        for flags in (0, 1 << 3):  # with and without REQ_ONE
            assert client.call(Command.BLOCK_STATUS, 0, 4096, flags).error == Errno.EINVAL
        assert client.call(Command.READ, 0, 16).error == 0
    finally:
        client.close()
    assert_serving(served)


@pytest.mark.parametrize("export", ["", "disk.img"], ids=["default-name", "by-name"])
def test_block_status_with_base_allocation(
    serve: Callable[..., Served], image: Path, export: str
) -> None:
    served = serve(str(image), "--port", "0")
    client = connected(served, export)
    try:
        assert client.connected is not None
        assert client.connected.meta_contexts == {"base:allocation": 1}
        result = client.call(Command.BLOCK_STATUS, 0, 4 << 20)
        assert result.error == 0
        (chunk,) = result.replies
        extents = chunk.extents  # type: ignore[union-attr]
        assert extents[0] == (1 << 20, 0)  # the patterned first MiB is data
        assert extents[1][1] == StateFlag.HOLE | StateFlag.ZERO  # then a hole
        assert sum(n for n, _ in extents) == 4 << 20
    finally:
        client.close()
