"""Fixtures shared by the block layer's tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

MakeImage = Callable[..., Path]


@pytest.fixture
def make_image(tmp_path: Path) -> MakeImage:
    """make_image(size, data=b"", at=0): a sparse image file holding `data` at `at`."""
    counter = itertools.count()

    def make(size: int, data: bytes = b"", at: int = 0) -> Path:
        path = tmp_path / f"disk{next(counter)}.img"
        with path.open("wb") as f:
            f.truncate(size)
            if data:
                f.seek(at)
                f.write(data)
        return path

    return make
