"""Helpers shared by the conformance suites (`ovis.*.testing`)."""

from __future__ import annotations

from collections.abc import Awaitable


async def expect_raises(exc_type: type[BaseException], what: str, call: Awaitable[object]) -> None:
    """Await `call`; AssertionError (naming `what`) unless it raises `exc_type`."""
    try:
        await call
    except exc_type:
        return
    except BaseException as exc:
        raise AssertionError(f"{what} raised {exc!r}, not {exc_type.__name__}") from exc
    raise AssertionError(f"{what} did not raise {exc_type.__name__}")
