"""Serving on IPv6 loopback (--bind ::1), and --allow lists over IPv6."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need, run

from ._support import IMAGE_SIZE, export_info, qemu_image, qemu_io, read_at

pytestmark = pytest.mark.interop


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def serve_v6(serve: Callable[..., Served]) -> Callable[..., Served]:
    if not ipv6_loopback():
        pytest.skip("::1 is not configured")
    return serve


def test_clients_over_ipv6(serve_v6: Callable[..., Served], image: Path) -> None:
    need("nbdinfo", "qemu-io")
    served = serve_v6(str(image), "--name", "disk", "--bind", "::1", "--port", "0")
    uri = served.uri("disk")
    assert uri.startswith("nbd://[::1]:"), uri
    assert export_info(uri)["export-size"] == IMAGE_SIZE
    qemu_io(qemu_image(uri), "write -P 0x61 8M 64k", "read -P 0x61 8M 64k")
    assert read_at(image, 8 * 1024 * 1024, 4) == b"aaaa"


def test_allow_list_over_ipv6(serve_v6: Callable[..., Served], image: Path) -> None:
    need("nbdinfo")
    allowed = serve_v6(
        str(image), "--name", "disk", "--bind", "::1", "--port", "0", "--allow", "::1"
    )
    assert export_info(allowed.uri("disk"))["export-size"] == IMAGE_SIZE
    denied = serve_v6(
        str(image), "--name", "disk", "--bind", "::1", "--port", "0", "--allow", "fd00::/8"
    )
    result = run(["nbdinfo", denied.uri("disk")], check=False)
    assert result.returncode != 0
