"""--config TOML: several exports, LIST with descriptions, allow-lists and size overrides."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.nbd._handshake_client import OptionRefused
from ovis.nbd.client import NbdClient, describe, list_exports
from tests.conftest import Served, make_image

from .helpers import PATTERN

MiB = 1 << 20


def write_config(tmp_path: Path) -> Path:
    disk = make_image(tmp_path / "disk.img", 64 * MiB)
    golden = make_image(tmp_path / "golden.img", 16 * MiB)
    secret = make_image(tmp_path / "secret.img", 8 * MiB)
    config = tmp_path / "exports.toml"
    config.write_text(
        f"""
default = "disk"

[exports.disk]
path = "{disk}"
description = "boot disk"
allow = ["127.0.0.1", "10.0.0.0/8"]

[exports.golden]
path = "{golden}"
description = "golden image, bigger than its file"
readonly = true
size = "32M"

[exports.small]
path = "{golden}"
size = "1M"

[exports.secret]
path = "{secret}"
description = "for someone else"
allow = ["10.9.9.9"]
"""
    )
    return config


def test_list_shows_allowed_exports_with_descriptions(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve("--config", str(write_config(tmp_path)), "--port", "0")
    exports = asyncio.run(list_exports(served.uri()))
    assert exports == [
        ("disk", "boot disk"),
        ("golden", "golden image, bigger than its file"),
        ("small", ""),
    ]  # "secret" is hidden from a client not on its allow-list


def test_allow_list_refuses_a_client_at_go(serve: Callable[..., Served], tmp_path: Path) -> None:
    served = serve("--config", str(write_config(tmp_path)), "--port", "0")

    async def go(name: str) -> bytes:
        client = await NbdClient.connect(served.uri(name))
        try:
            return await client.read(0, 4096)
        finally:
            await client.aclose()

    with pytest.raises(OptionRefused, match="ERR_POLICY"):
        asyncio.run(go("secret"))
    with pytest.raises(OptionRefused, match="ERR_POLICY"):
        asyncio.run(describe(served.uri("secret")))
    with pytest.raises(OptionRefused, match="ERR_UNKNOWN"):
        asyncio.run(go("nonesuch"))
    # On the list (127.0.0.1), and the default export answers the empty name.
    assert asyncio.run(go("disk")) == PATTERN
    assert asyncio.run(go("")) == PATTERN


def test_size_override(serve: Callable[..., Served], tmp_path: Path) -> None:
    served = serve("--config", str(write_config(tmp_path)), "--port", "0")

    async def check() -> None:
        golden = await NbdClient.connect(served.uri("golden"))
        small = await NbdClient.connect(served.uri("small"))
        try:
            assert golden.size == 32 * MiB and golden.read_only
            # Past the file's own end (16 MiB) the export reads zeros, up to 32 MiB.
            assert await golden.read(30 * MiB, 4096) == bytes(4096)
            assert await golden.read(14 * MiB, 4096) == PATTERN
            assert small.size == 1 * MiB and not small.read_only
            assert await small.read(0, 4096) == PATTERN
            await small.write(MiB - 4, b"last")
            assert await small.read(MiB - 4, 4) == b"last"
        finally:
            await golden.aclose()
            await small.aclose()

    asyncio.run(check())
    assert (tmp_path / "golden.img").stat().st_size == 16 * MiB  # nothing grew the file
