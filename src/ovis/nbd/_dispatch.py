"""From NBD requests to BlockDevice calls, and back to replies.

The flags an export advertises are derived from the device's capabilities
here, and each request is checked against exactly those flags: a command or
flag the client was not offered gets EINVAL (ENOTSUP is reserved for
FAST_ZERO).  Range and capability checks are CheckedDevice's job, not ours.
"""

from __future__ import annotations

from ovis.block._device import BlockDevice, BlockError, Capabilities
from ovis.block._fileio import pread_full, pwrite_full

from ._constants import BASE_ALLOCATION, Command, CommandFlag, Errno
from ._constants import TransmissionFlag as TF
from ._events import (
    BlockStatusChunk,
    DataChunk,
    DoneChunk,
    ErrorChunk,
    Reply,
    Request,
    SimpleReply,
)
from ._replies import FileSlice

MAX_EXTENTS = 64 * 1024  # per BLOCK_STATUS reply; bounds the reply size
ZERO_COPY_MIN = 64 * 1024  # smaller reads are cheaper copied and batched with other replies

F = CommandFlag
# Plain ints for the per-request path (IntEnum/IntFlag operators are slow).
_READ, _WRITE, _BLOCK_STATUS = int(Command.READ), int(Command.WRITE), int(Command.BLOCK_STATUS)
_FUA, _DF, _NO_HOLE = int(F.FUA), int(F.DF), int(F.NO_HOLE)
_FAST_ZERO, _REQ_ONE, _PAYLOAD_LEN = int(F.FAST_ZERO), int(F.REQ_ONE), int(F.PAYLOAD_LEN)
# Not offered on a read-only export, yet writes: EPERM there, not EINVAL.
_READ_ONLY_REFUSED = frozenset({int(Command.TRIM), int(Command.WRITE_ZEROES)})
_ALLOWED_FLAGS = {
    Command.READ: F.FUA | F.DF,
    Command.WRITE: F.FUA | F.PAYLOAD_LEN,
    Command.FLUSH: F.FUA,
    Command.TRIM: F.FUA,
    Command.CACHE: F.FUA,
    Command.WRITE_ZEROES: F.FUA | F.NO_HOLE | F.FAST_ZERO,
    Command.BLOCK_STATUS: F.FUA | F.REQ_ONE,
}
_NEEDED_FLAG = {
    Command.FLUSH: TF.SEND_FLUSH,
    Command.TRIM: TF.SEND_TRIM,
    Command.CACHE: TF.SEND_CACHE,
    Command.WRITE_ZEROES: TF.SEND_WRITE_ZEROES,
}


def transmission_flags(caps: Capabilities) -> TF:
    """The flags an export with these capabilities may truthfully advertise.

    SEND_DF is included; the handshake clears it if structured replies were
    not negotiated.
    """
    flags = TF.HAS_FLAGS | TF.SEND_DF
    if not caps.can_write:
        flags |= TF.READ_ONLY
    if caps.can_flush:
        flags |= TF.SEND_FLUSH
    if caps.can_fua:
        flags |= TF.SEND_FUA
    if caps.rotational:
        flags |= TF.ROTATIONAL
    if caps.can_trim:
        flags |= TF.SEND_TRIM
    if caps.can_zero:
        flags |= TF.SEND_WRITE_ZEROES
        if caps.can_fast_zero:
            flags |= TF.SEND_FAST_ZERO
    if caps.can_cache:
        flags |= TF.SEND_CACHE
    if caps.can_multi_conn:
        flags |= TF.CAN_MULTI_CONN
    return flags


class Dispatcher:
    """Executes the requests of one connection against its device."""

    def __init__(
        self,
        device: BlockDevice,
        flags: int,
        *,
        structured: bool,
        extended: bool,
        meta_contexts: dict[int, str],
        zero_copy: bool = False,
    ) -> None:
        self.device = device
        self.flags = flags
        self.structured = structured
        self.extended = extended
        self.contexts = meta_contexts
        self._max_payload = device.capabilities.max_block
        self._allowed = self._allowed_flags()
        # READs at least this long are answered with a FileSlice where they can be.
        self._zero_copy_min = ZERO_COPY_MIN if zero_copy else 1 << 64

    def _allowed_flags(self) -> dict[int, int]:
        """Command -> the request flags allowed for it on this connection.

        Plain ints, computed once: IntFlag arithmetic is too slow for the
        per-request path.  A command missing here was not offered.
        """
        offered, table = int(self.flags), {}
        if not self.structured:  # DF needs structured replies; the handshake cleared it
            offered &= ~int(TF.SEND_DF)
        for command, mask in _ALLOWED_FLAGS.items():
            needed = _NEEDED_FLAG.get(command)
            if needed is not None and not offered & needed:
                continue
            # Plain ints throughout: `int & IntFlag` is an IntFlag, whose ~ would
            # silently drop the unknown bits we must refuse.
            allowed = int(mask)
            if not offered & TF.SEND_FUA:
                allowed &= ~_FUA
            if not offered & TF.SEND_DF:
                allowed &= ~_DF
            if not offered & TF.SEND_FAST_ZERO:
                allowed &= ~_FAST_ZERO
            if not self.extended:
                allowed &= ~_PAYLOAD_LEN
            table[int(command)] = allowed
        return table

    def refusal(self, request: Request) -> Errno | None:
        """Why this request is refused before touching the device, if it is."""
        command, flags = request.command, request.flags
        allowed = self._allowed.get(command)
        if allowed is None or flags & ~allowed:
            if allowed is None and command in _READ_ONLY_REFUSED and self.flags & TF.READ_ONLY:
                return Errno.EPERM  # spec: SHOULD be EPERM for trims/zeroes on read-only
            return Errno.EINVAL  # a command or flag this client was not offered
        if request.payload_dropped:
            return Errno.EINVAL  # payload too large (or not expected): skipped unread
        if command == _READ and request.length > self._max_payload:
            return Errno.EOVERFLOW if flags & _DF else Errno.EINVAL
        if command == _BLOCK_STATUS and not self.contexts:
            return Errno.EINVAL
        return None

    # The hot path.  Where the device stack says a file holds the range
    # (`file_at`), a READ or WRITE is a pread or pwrite here and now, without
    # a coroutine per layer: on a page-cached image that is most of a small
    # request's cost.  Anything unusual (a refusal, FUA, an I/O error) gets
    # None, and `execute` then runs the request on the full path.
    def read_now(self, request: Request) -> bytes | FileSlice | None:
        """A READ's data, read at once; a FileSlice for the caller to send if long."""
        offset, length = request.offset, request.length
        if request.flags & ~self._allowed[_READ]:
            return None
        fd = self.device.file_at(offset, length, write=False)  # -1 past max_block, too
        if fd < 0:
            return None
        if length >= self._zero_copy_min:
            return FileSlice(fd, offset, length)
        try:
            return pread_full(fd, length, offset)
        except OSError:
            return None

    def write_now(self, request: Request) -> bool:
        """Whether a plain WRITE (no flags) was done at once."""
        data = request.data
        if request.flags or data is None:  # a read-only export: file_at says -1
            return False
        fd = self.device.file_at(request.offset, request.length, write=True)
        if fd < 0:
            return False
        try:
            pwrite_full(fd, data, request.offset)
        except OSError:
            return False
        return True

    async def execute(self, request: Request) -> list[Reply]:
        """Run one request; the replies to send, in order (the last one is final)."""
        error = self.refusal(request)
        if error is None:
            try:
                return await self._run(request)
            except BlockError as exc:
                return self._error(request, exc.errno, str(exc))
        return self._error(request, error, "")

    def _error(self, request: Request, errno: int, message: str) -> list[Reply]:
        if self.structured:
            return [ErrorChunk(request.cookie, errno, message[:200])]
        return [SimpleReply(request.cookie, errno)]

    def _ok(self, request: Request) -> list[Reply]:
        if self.extended:
            return [DoneChunk(request.cookie)]
        return [SimpleReply(request.cookie)]

    async def _run(self, request: Request) -> list[Reply]:
        device, command = self.device, request.command
        offset, length, flags = request.offset, request.length, request.flags
        fua = bool(flags & _FUA)
        if command == _READ:
            data = await device.read(offset, length)
            if self.structured:
                return [DataChunk(request.cookie, offset, data, done=True)]
            return [SimpleReply(request.cookie, 0, data)]
        if command == _WRITE:
            assert request.data is not None
            await device.write(offset, request.data, fua=fua)
        elif command == Command.FLUSH:
            await device.flush()
        elif command == Command.TRIM:
            await device.trim(offset, length, fua=fua)
        elif command == Command.CACHE:
            await device.cache(offset, length)
        elif command == Command.WRITE_ZEROES:
            await device.zero(
                offset,
                length,
                may_trim=not flags & _NO_HOLE,
                fast=bool(flags & _FAST_ZERO),
                fua=fua,
            )
        elif command == Command.BLOCK_STATUS:
            return await self._block_status(request)
        return self._ok(request)

    async def _block_status(self, request: Request) -> list[Reply]:
        length = request.length
        extents = await self.device.extents(request.offset, length)
        if request.flags & _REQ_ONE:
            extents = extents[:1]
        pairs = tuple((e.length, int(e.flags)) for e in extents[:MAX_EXTENTS])
        replies: list[Reply] = []
        ids = [i for i, name in self.contexts.items() if name == BASE_ALLOCATION]
        for n, context_id in enumerate(ids):
            last = n == len(ids) - 1
            replies.append(BlockStatusChunk(request.cookie, context_id, pairs, done=last))
        return replies
