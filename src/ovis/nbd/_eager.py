"""Run a coroutine eagerly: no Task unless it actually has to wait.

Most NBD requests against a page-cached file complete without ever
suspending; creating and scheduling a Task for each costs more than the
request itself.  Python 3.12's eager task factory does this for a whole
loop; on 3.11 we do it for the request path only.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Step `coro` now; if it suspends, a Task carries on from there."""
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_carry_on(coro, yielded))


@types.coroutine
def _carry_on(coro: Coroutine[Any, Any, None], yielded: Any) -> Generator[Any, Any, None]:
    """Delegate to a coroutine that already yielded `yielded` (as `yield from` would)."""
    while True:
        try:
            value = yield yielded
        except BaseException as exc:  # cancellation and friends go to the coroutine
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            yielded = coro.send(value)
        except StopIteration:
            return
