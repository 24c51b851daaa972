"""Retrying and waiting helpers for the cluster's background loops."""

from __future__ import annotations

import asyncio
import random


class Backoff:
    """Retry delays: doubling from `first` up to `most`, with jitter."""

    def __init__(self, first: float = 0.1, most: float = 5.0) -> None:
        self._first = first
        self._most = most
        self._delay = first

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self._most)
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._delay = self._first


async def either(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Return once any of `events` is set, or after `timeout` seconds."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
