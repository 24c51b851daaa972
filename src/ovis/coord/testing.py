"""The conformance suite every Coordinator must pass: `check_coordinator(factory)`.

`factory()` returns a new client of one shared store (a new SqliteCoordinator
on the same file, a new EtcdCoordinator on the same cluster), so checks can
race two clients.  Each run works under a fresh key prefix, so the store need
not be empty.  `compact` runs last because it discards shared history.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable

from ovis._testing import expect_raises

from ._interface import (
    Compacted,
    CompareFailed,
    Coordinator,
    CoordinatorClosed,
    SessionLost,
    WatchEvent,
)

Factory = Callable[[], Awaitable[Coordinator]]
_Check = Callable[[Coordinator, Coordinator, str], Awaitable[None]]
EXPIRY_SLACK = 4.0  # seconds past the TTL a dead session's keys may linger


async def check_coordinator(factory: Factory) -> None:
    """Run every check with two fresh clients from `factory`; AssertionError on failure."""
    checks: list[_Check] = [
        _check_get_put_list,
        _check_compare_and_swap,
        _check_cas_race,
        _check_watch_replays_and_follows,
        _check_session_expiry,
        _check_fencing_tokens,
        _check_compaction,
    ]
    for check in checks:
        first, second = await factory(), await factory()
        try:
            await check(first, second, f"/conformance/{uuid.uuid4().hex[:8]}/")
        finally:
            await first.aclose()
            await second.aclose()
    await _check_close(await factory())


async def _collect(c: Coordinator, prefix: str, start: int, count: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    async with asyncio.timeout(10):
        watch = c.watch(prefix, start)
        async with contextlib.aclosing(watch):
            async for event in watch:
                events.append(event)
                if len(events) == count:
                    break
    return events


async def _until_absent(c: Coordinator, key: str, within: float) -> float:
    start = time.monotonic()
    while await c.get(key) is not None:
        if time.monotonic() - start > within:
            raise AssertionError(f"{key} still present {within:g}s after its session died")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def _check_get_put_list(a: Coordinator, b: Coordinator, p: str) -> None:
    assert await a.get(p + "missing") is None
    r1 = await a.put(p + "k/2", b"two")
    r2 = await a.put(p + "k/1", b"one")
    r3 = await b.put(p + "k/2", b"TWO")
    r4 = await b.put(p + "kk", b"outside")
    assert r1 < r2 < r3 < r4, "revisions must strictly increase across clients"
    kv = await b.get(p + "k/2")
    assert kv is not None and kv.value == b"TWO", kv
    assert (kv.create_revision, kv.mod_revision, kv.session) == (r1, r3, 0), kv
    items, rev = await b.list(p + "k/")
    assert [(i.key, i.value) for i in items] == [(p + "k/1", b"one"), (p + "k/2", b"TWO")]
    assert rev >= r4, "list must return the store revision of its snapshot"
    empty, _ = await a.list(p + "nothing/")
    assert empty == []
    await a.put(p + "empty", b"")
    kv = await a.get(p + "empty")
    assert kv is not None and kv.value == b"", "an empty value is a value"


async def _check_compare_and_swap(a: Coordinator, b: Coordinator, p: str) -> None:
    key = p + "cas"
    r1 = await a.put_if(key, b"v1", 0)
    try:
        await b.put_if(key, b"again", 0)
        raise AssertionError("create-if-absent succeeded on an existing key")
    except CompareFailed as exc:
        assert exc.actual_revision == r1, exc
    r2 = await b.put_if(key, b"v2", r1)
    assert r2 > r1
    await expect_raises(CompareFailed, "put_if with a stale revision", a.put_if(key, b"v3", r1))
    await expect_raises(CompareFailed, "put_if on an absent key", a.put_if(p + "absent", b"x", r2))
    await expect_raises(CompareFailed, "delete_if with a stale revision", a.delete_if(key, r1))
    await expect_raises(CompareFailed, "delete_if on an absent key", a.delete_if(p + "absent", r2))
    await expect_raises(ValueError, "delete_if with revision 0", a.delete_if(key, 0))
    kv = await a.get(key)
    assert kv is not None and kv.value == b"v2" and kv.mod_revision == r2, kv
    r3 = await a.delete_if(key, r2)
    assert r3 > r2 and await b.get(key) is None
    assert await b.put_if(key, b"reborn", 0) > r3, "create after delete"


async def _check_cas_race(a: Coordinator, b: Coordinator, p: str) -> None:
    async def create(c: Coordinator) -> bool:
        try:
            await c.put_if(p + "once", b"x", 0)
        except CompareFailed:
            return False
        return True

    wins = await asyncio.gather(*(create(c) for c in (a, b, a, b)))
    assert sum(wins) == 1, f"create-if-absent won {sum(wins)} times"

    async def increment(c: Coordinator, times: int) -> None:
        for _ in range(times):
            while True:
                kv = await c.get(p + "counter")
                value, rev = (int(kv.value), kv.mod_revision) if kv else (0, 0)
                try:
                    await c.put_if(p + "counter", str(value + 1).encode(), rev)
                    break
                except CompareFailed:
                    await asyncio.sleep(0)

    await asyncio.gather(increment(a, 15), increment(b, 15))
    kv = await a.get(p + "counter")
    assert kv is not None and kv.value == b"30", f"lost updates: counter is {kv}"


async def _check_watch_replays_and_follows(a: Coordinator, b: Coordinator, p: str) -> None:
    w = p + "w/"
    r1 = await a.put(w + "x", b"1")
    r2 = await a.put(p + "other", b"not watched")
    r3 = await a.put(w + "y", b"2")
    kv = await a.get(w + "x")
    assert kv is not None
    r4 = await a.delete_if(w + "x", kv.mod_revision)
    expected = [
        WatchEvent("put", w + "x", b"1", r1),
        WatchEvent("put", w + "y", b"2", r3),
        WatchEvent("delete", w + "x", b"", r4),
    ]
    assert await _collect(b, w, r1, 3) == expected, "watch from an old revision must replay"
    assert (await _collect(b, w, r2, 2)) == expected[1:], "replay starts at from_revision"

    async def later() -> int:
        await asyncio.sleep(0.2)
        return await a.put(w + "z", b"live")

    live, r5 = await asyncio.gather(_collect(b, w, r4 + 1, 1), later())
    assert live == [WatchEvent("put", w + "z", b"live", r5)], live
    items, rev = await b.list(w)
    r6 = await a.put(w + "after", b"!")
    assert await _collect(b, w, rev + 1, 1) == [WatchEvent("put", w + "after", b"!", r6)]
    assert [i.key for i in items] == [w + "y", w + "z"]


async def _check_session_expiry(a: Coordinator, b: Coordinator, p: str) -> None:
    kept = await a.open_session(1)
    dying = await a.open_session(1)
    revoked = await a.open_session(1)
    assert len({kept.id, dying.id, revoked.id}) == 3 and kept.alive()
    await a.put(p + "kept", b"k", session=kept)
    rev = await a.put_if(p + "dying", b"d", 0, session=dying)
    await a.put(p + "revoked", b"r", session=revoked)
    kv = await b.get(p + "dying")
    assert kv is not None and kv.session == dying.id, kv
    await a.close_session(revoked)
    assert await b.get(p + "revoked") is None, "revoking must delete the session's keys"
    assert revoked.lost.is_set()
    await a.close_session(dying, revoke=False)  # as if the process died
    watch = _collect(b, p + "dying", rev + 1, 1)
    elapsed, events = await asyncio.gather(_until_absent(b, p + "dying", 1 + EXPIRY_SLACK), watch)
    assert events[0].kind == "delete", events
    assert elapsed > 0.3, f"ephemeral key vanished after {elapsed:.2f}s, before its TTL"
    await asyncio.sleep(1.2)  # past a TTL: the kept-alive session must survive
    assert kept.alive() and not kept.lost.is_set()
    assert await b.get(p + "kept") is not None, "a live session's key must stay"
    await expect_raises(
        SessionLost, "put with an expired session", a.put(p + "z", b"", session=dying)
    )
    await a.close_session(kept)
    await a.close_session(kept)  # idempotent
    assert await b.get(p + "kept") is None


async def _check_fencing_tokens(a: Coordinator, b: Coordinator, p: str) -> None:
    lock = p + "lock"
    sa, sb = await a.open_session(1), await b.open_session(1)
    t1 = await a.try_acquire(lock, sa, b"a")
    assert t1 is not None
    assert await b.try_acquire(lock, sb, b"b") is None, "a held lock was taken twice"
    waiter = asyncio.create_task(b.acquire(lock, sb, b"b", timeout=10))
    await asyncio.sleep(0.2)
    assert not waiter.done(), "acquire returned while the lock was held"
    assert await a.release(lock, t1)
    t2 = await waiter
    assert t2 > t1, f"fencing token went from {t1} to {t2}"
    assert not await a.release(lock, t1), "a stale token released someone else's lock"
    await b.close_session(sb, revoke=False)  # the holder dies without releasing
    t3 = await a.acquire(lock, sa, b"a", timeout=1 + EXPIRY_SLACK)
    assert t3 > t2, f"fencing token went from {t2} to {t3}"
    kv = await b.get(lock)
    assert kv is not None and (kv.value, kv.session, kv.mod_revision) == (b"a", sa.id, t3)
    sb = await b.open_session(1)
    await expect_raises(TimeoutError, "acquire of a held lock", b.acquire(lock, sb, timeout=0.3))
    await a.close_session(sa)
    assert await b.get(lock) is None, "ending the session must release its lock"


async def _check_compaction(a: Coordinator, b: Coordinator, p: str) -> None:
    r1 = await a.put(p + "c", b"1")
    r2 = await a.put(p + "c", b"2")
    r3 = await a.put(p + "c", b"3")
    await a.compact(r3)
    await expect_raises(Compacted, "watch from a compacted revision", _collect(b, p, r1, 1))
    assert r2 < r3
    events = await _collect(b, p, r3, 1)
    assert events == [WatchEvent("put", p + "c", b"3", r3)], events
    await a.compact(r1)  # already compacted past it: no error


async def _check_close(c: Coordinator) -> None:
    await c.put("/conformance/closing", b"x")
    await c.aclose()
    await c.aclose()  # idempotent
    await expect_raises(CoordinatorClosed, "get after aclose", c.get("/conformance/closing"))
