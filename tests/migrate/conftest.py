"""Fixtures of the migration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .live import Processes


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Start qemu-nbd servers; all are stopped (by PID) when the test ends."""
    started = Processes()
    yield started
    started.stop_all()
