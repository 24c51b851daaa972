"""--bind ::1 serves over IPv6 (skipped where the host has no IPv6 loopback)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served

from .helpers import assert_serving


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_bind_ipv6_loopback(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--port", "0", "--bind", "::1", "--allow", "::1")
    assert served.uri().startswith("nbd://[::1]:")
    assert_serving(served)
