"""NbdDevice: a remote NBD export as a BlockDevice leaf.

Why: proxy mode reads its source, and a mirror job writes its destination,
through the same interface as a local file, so filters stack over a remote
disk exactly as over a local one (qemu's nbd block driver, nbdkit's nbd
plugin).

How the remote's facts become capabilities:
- can_write unless READ_ONLY; can_flush from SEND_FLUSH; FUA is passed on
  with SEND_FUA and emulated with a flush after the write otherwise.
- can_trim needs SEND_TRIM.  can_zero holds for any writable export: without
  SEND_WRITE_ZEROES, zeros are written as data (and fast zero is refused).
  can_fast_zero needs SEND_FAST_ZERO; can_cache needs SEND_CACHE.
- can_extents needs base:allocation to have been negotiated.
- can_multi_conn: every ovis connection above shares this one NBD
  connection, so a flush sent on it covers every write sent on it.
- min_block and preferred_block are the remote's; max_block is ovis's own
  32 MiB, and a request larger than the remote's maximum is split.  Requests
  without a payload (trim, zero, block status) are split at 1 GiB so their
  length always fits the 32-bit field of compact requests.

Failure: a remote error reply becomes BlockError with the remote's errno
(EIO for values NBD does not define); a lost connection becomes
BlockError(EIO).  There is no reconnect: once the connection has failed,
every request fails, and the owner must open a new device.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from types import TracebackType

from ovis.block._device import BlockDevice, BlockError, Buffer, Capabilities, Extent, MiB
from ovis.nbd._constants import BASE_ALLOCATION, Errno, StateFlag
from ovis.nbd._constants import TransmissionFlag as TF
from ovis.nbd.client import NbdClient, NbdError

_MAX_BLOCK = 32 * MiB
# Trim, zero and block status carry no payload; split them below 2**32.
_MAX_NO_PAYLOAD = 1 << 30


class _RemoteErrors:
    """`with _remote_errors:` turns NbdError and connection errors into BlockError.

    A class rather than @contextmanager, as in _checked.py: it runs on every
    request, and a stateless singleton costs no generator per call.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, NbdError):
            try:
                code = Errno(exc.errno)
            except ValueError:
                code = Errno.EIO
            code = Errno.EIO if code is Errno.OK else code
            raise BlockError(code, f"remote: {exc}") from exc
        if isinstance(exc, OSError):  # ConnectionError included
            raise BlockError(Errno.EIO, f"remote connection: {exc}") from exc


_remote_errors = _RemoteErrors()


@dataclasses.dataclass(frozen=True, slots=True)
class _Limits:
    min_block: int
    max_request: int  # largest READ/WRITE the remote takes, a multiple of min_block


class NbdDevice(BlockDevice):
    """The export behind `client`; the device owns the client and closes it."""

    def __init__(self, client: NbdClient) -> None:
        self._client = client
        export = client.export
        writable = not client.read_only
        min_block = min(max(export.min_block, 1), 64 * 1024)
        if min_block & (min_block - 1):  # not a power of two: the remote is odd; be safe
            min_block = 64 * 1024
        preferred = max(min(export.preferred_block, _MAX_BLOCK), min_block)
        if preferred & (preferred - 1):
            preferred = max(min_block, 4096)
        max_request = max(min(export.max_block, _MAX_BLOCK) // min_block * min_block, min_block)
        self._limits = _Limits(min_block, max_request)
        self._native_fua = client.has(TF.SEND_FUA)
        self._native_zero = client.has(TF.SEND_WRITE_ZEROES)
        self._caps = Capabilities(
            can_write=writable,
            can_flush=client.has(TF.SEND_FLUSH),
            can_fua=writable and (self._native_fua or client.has(TF.SEND_FLUSH)),
            can_trim=writable and client.has(TF.SEND_TRIM),
            can_zero=writable,
            can_fast_zero=writable and self._native_zero and client.has(TF.SEND_FAST_ZERO),
            can_cache=client.has(TF.SEND_CACHE),
            can_extents=client.structured and BASE_ALLOCATION in client.meta_contexts,
            can_multi_conn=True,  # one connection below, see the module docstring
            rotational=client.has(TF.ROTATIONAL),
            min_block=min_block,
            preferred_block=preferred,
            max_block=_MAX_BLOCK,
        )
        self._closed = False

    @classmethod
    async def open(cls, uri: str, *, tls: ssl.SSLContext | None = None) -> NbdDevice:
        """Connect to `uri` (nbd://host:port/export and friends).

        Raises OSError if the server cannot be reached and ProtocolError or
        NbdError if the handshake fails; nothing stays open then.
        """
        client = await NbdClient.connect(uri, tls=tls)
        return cls(client)

    @property
    def size(self) -> int:
        return self._client.size

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def client(self) -> NbdClient:
        return self._client

    def _pieces(self, offset: int, length: int, limit: int) -> list[tuple[int, int]]:
        return [
            (pos, min(limit, offset + length - pos))
            for pos in range(offset, offset + length, limit)
        ]

    async def read(self, offset: int, length: int) -> Buffer:
        with _remote_errors:
            if length <= self._limits.max_request:
                return await self._client.read(offset, length)
            parts = await asyncio.gather(
                *(
                    self._client.read(o, n)
                    for o, n in self._pieces(offset, length, self._limits.max_request)
                )
            )
        return b"".join(parts)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        view = memoryview(data).cast("B")
        native = fua and self._native_fua
        with _remote_errors:
            if len(view) <= self._limits.max_request:
                await self._client.write(offset, view, fua=native)
            else:
                await asyncio.gather(
                    *(
                        self._client.write(o, view[o - offset : o - offset + n], fua=native)
                        for o, n in self._pieces(offset, len(view), self._limits.max_request)
                    )
                )
            if fua and not native:
                await self._client.flush()

    async def flush(self) -> None:
        if not self._caps.can_flush:
            return  # the remote has no write cache to flush
        with _remote_errors:
            await self._client.flush()

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        native = fua and self._native_fua
        with _remote_errors:
            for o, n in self._pieces(offset, length, _MAX_NO_PAYLOAD):
                await self._client.trim(o, n, fua=native)
            if fua and not native:
                await self._client.flush()

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        if not self._native_zero:
            await super().zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)
            return
        native = fua and self._native_fua
        with _remote_errors:
            for o, n in self._pieces(offset, length, _MAX_NO_PAYLOAD):
                await self._client.zero(o, n, may_trim=may_trim, fast=fast, fua=native)
            if fua and not native:
                await self._client.flush()

    async def cache(self, offset: int, length: int) -> None:
        if not self._caps.can_cache:
            return  # a hint the remote cannot take
        with _remote_errors:
            for o, n in self._pieces(offset, length, _MAX_NO_PAYLOAD):
                await self._client.cache(o, n)

    async def extents(self, offset: int, length: int) -> list[Extent]:
        if not self._caps.can_extents:
            return [Extent(length)]
        asked = min(length, _MAX_NO_PAYLOAD)
        with _remote_errors:
            raw = await self._client.block_status(offset, asked)
        # The last extent may run past the request: clip it, as callers rely
        # on extents never describing more than they asked for.
        out: list[Extent] = []
        remaining = asked
        for ext_length, flags in raw:
            if remaining <= 0:
                break
            n = min(ext_length, remaining)
            if n > 0:
                out.append(Extent(n, StateFlag(flags & (StateFlag.HOLE | StateFlag.ZERO))))
                remaining -= n
        return out or [Extent(asked)]

    async def aclose(self) -> None:
        """Send NBD_CMD_DISC and close the connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()
