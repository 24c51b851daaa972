"""Each NBD command through libnbd (nbdsh): pread/pwrite, flush, trim, zero, block status, cache.

libnbd checks every reply against the protocol (structured reply chunks,
block status extents), so a malformed reply fails the snippet too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need

from ._support import PATTERN_MIB, MiB, nbdsh, read_at

pytestmark = pytest.mark.interop


@pytest.fixture
def uri(serve: Callable[..., Served], image: Path) -> str:
    need("nbdsh")
    served = serve(str(image), "--name", "disk", "--port", "0")
    return served.uri("disk")


def test_pread_pwrite_round_trip(uri: str, image: Path) -> None:
    nbdsh(
        uri,
        """
        import os
        data = os.urandom(3 * 65536 + 17)
        h.pwrite(data, 1000)
        assert h.pread(len(data), 1000) == data
        assert h.pread(1000, 0) == bytes(range(256)) * 3 + bytes(range(232))
        h.pwrite(b"end!", h.get_size() - 4)
        assert h.pread(4, h.get_size() - 4) == b"end!"
        # a read straddling the end of the device is an error, not short data
        # (strict mode off: libnbd would refuse to send it at all)
        h.set_strict_mode(0)
        try:
            h.pread(8, h.get_size() - 4)
        except nbd.Error as exc:
            assert exc.errno in ("EINVAL", "ENOSPC"), exc
        else:
            raise AssertionError("read past the end succeeded")
        assert h.pread(4, 0) == bytes(range(4))
        """,
    )
    assert read_at(image, 64 * MiB - 4, 4) == b"end!"


def test_pwrite_with_fua_and_flush(uri: str, image: Path) -> None:
    nbdsh(
        uri,
        """
        assert h.can_fua() and h.can_flush()
        h.pwrite(b"\\x01" * 4096, 2 << 20, nbd.CMD_FLAG_FUA)
        h.pwrite(b"\\x02" * 4096, 3 << 20)
        h.flush()
        # With SEND_FUA the server must accept FUA on every command; libnbd
        # would refuse to send it on flush and read unless told not to check.
        h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_FLAGS)
        h.flush(nbd.CMD_FLAG_FUA)
        assert h.pread(4096, 2 << 20, nbd.CMD_FLAG_FUA) == b"\x01" * 4096
        """,
    )
    assert read_at(image, 2 * MiB, 4096) == b"\x01" * 4096
    assert read_at(image, 3 * MiB, 4096) == b"\x02" * 4096


def test_trim_punches_only_the_range(uri: str) -> None:
    nbdsh(
        uri,
        """
        assert h.can_trim()
        h.pwrite(b"\\x77" * (1 << 20), 8 << 20)
        h.trim(256 << 10, (8 << 20) + (256 << 10))
        h.trim(5000, (8 << 20) + (700 << 10))  # unaligned: may round inward
        mib = h.pread(1 << 20, 8 << 20)
        assert mib[: 256 << 10] == b"\\x77" * (256 << 10)
        assert mib[256 << 10 : 512 << 10] == bytes(256 << 10)  # a punched hole reads zeros
        assert mib[512 << 10 : 700 << 10] == b"\\x77" * (188 << 10)
        assert mib[(700 << 10) + 5000 :] == b"\\x77" * ((324 << 10) - 5000)
        """,
    )


def test_zero_with_fast_zero_and_no_hole(uri: str) -> None:
    nbdsh(
        uri,
        """
        assert h.can_zero() and h.can_fast_zero()
        h.pwrite(b"\\x88" * (1 << 20), 10 << 20)
        h.zero(64 << 10, (10 << 20) + (64 << 10), nbd.CMD_FLAG_FAST_ZERO)
        h.zero(4096, (10 << 20) + (256 << 10), nbd.CMD_FLAG_NO_HOLE)
        h.zero(3, (10 << 20) + 1000, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_FUA)
        mib = h.pread(1 << 20, 10 << 20)
        expected = bytearray(b"\\x88" * (1 << 20))
        expected[64 << 10 : 128 << 10] = bytes(64 << 10)
        expected[256 << 10 : (256 << 10) + 4096] = bytes(4096)
        expected[1000:1003] = bytes(3)
        assert mib == expected
        """,
    )


def test_block_status_describes_the_layout(uri: str) -> None:
    nbdsh(
        uri,
        """
        assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        h.pwrite(b"\\x99" * 65536, 20 << 20)
        seen = []
        def extents(context, offset, entries, err):
            assert context == nbd.CONTEXT_BASE_ALLOCATION
            pos = offset
            for i in range(0, len(entries), 2):
                seen.append((pos, entries[i], entries[i + 1]))
                pos += entries[i]
        def data_at(offset):
            for start, length, flags in seen:
                if start <= offset < start + length:
                    return not flags & nbd.STATE_HOLE
            raise AssertionError(f"{offset} not described: {seen}")
        pos, size = 0, h.get_size()
        while pos < size:
            before = len(seen)
            h.block_status(size - pos, pos, extents)
            assert len(seen) > before
            pos = seen[-1][0] + seen[-1][1]
        assert pos >= size
        assert data_at(0) and data_at((1 << 20) - 1)
        assert data_at(20 << 20) and data_at((20 << 20) + 65535)
        assert data_at((62 << 20) + 5)
        assert not data_at(10 << 20) and not data_at(40 << 20)
        for start, length, flags in seen:
            if flags & nbd.STATE_ZERO:  # ZERO must be true
                assert h.pread(min(length, 1 << 20), start) == bytes(min(length, 1 << 20))

        # REQ_ONE: exactly one extent, not longer than asked
        one = []
        h.block_status(
            4 << 20, 0, lambda c, o, e, err: one.append(list(e)), nbd.CMD_FLAG_REQ_ONE
        )
        assert len(one) == 1 and len(one[0]) == 2, one
        assert 0 < one[0][0] <= 1 << 20 and not one[0][1] & nbd.STATE_HOLE, one
        """,
    )


def test_cache_is_accepted_and_changes_nothing(uri: str, image: Path) -> None:
    nbdsh(
        uri,
        """
        assert h.can_cache()
        h.cache(2 << 20, 0)
        h.cache(4096, (62 << 20) + 100)
        assert h.pread(1 << 20, 0) == bytes(range(256)) * 4096
        assert h.pread(4096, 62 << 20) == bytes(range(256)) * 16
        """,
    )
    assert read_at(image, 0, MiB) == PATTERN_MIB


def test_many_requests_in_flight(uri: str) -> None:
    nbdsh(
        uri,
        """
        bufs = []
        for i in range(64):
            buf = nbd.Buffer.from_bytearray(bytearray([i]) * 65536)
            h.aio_pwrite(buf, (24 << 20) + i * 65536)
            bufs.append(buf)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        reads = []
        for i in range(64):
            buf = nbd.Buffer(65536)
            h.aio_pread(buf, (24 << 20) + i * 65536)
            reads.append(buf)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for i, buf in enumerate(reads):
            assert buf.to_bytearray() == bytearray([i]) * 65536, i
        """,
    )
