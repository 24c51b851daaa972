"""Errors as peer-protocol replies, and back (see _wire for the frame layout).

An error reply's status names the exception type, field0..2 carry its
numeric attributes and the payload its message, so the client raises the
same type with the same fields and text the service raised.
"""

from __future__ import annotations

from typing import TypeVar

from ovis.block._device import BlockError
from ovis.nbd._constants import Errno
from ovis.store import ChecksumError, ObjectNotFound, StaleVersion, StoreClosed

from ._model import Fenced, NotAccepting, PeerUnavailable, WrongEpoch
from ._wire import MAX_MESSAGE, Reply, Request, Status


def _message(text: str) -> bytes:
    raw = text.encode()
    if len(raw) <= MAX_MESSAGE:
        return raw
    return raw[:MAX_MESSAGE].decode(errors="ignore").encode()


def error_reply(request: Request, exc: BaseException) -> Reply:
    """The reply that makes the client raise `exc` again (a non-BlockError becomes one)."""
    fields: tuple[int, int, int] = (0, 0, 0)
    payload = _message(str(exc))
    if isinstance(exc, ObjectNotFound):
        status, fields = Status.OBJECT_NOT_FOUND, (exc.oid, 0, 0)
    elif isinstance(exc, StaleVersion):
        status, fields = Status.STALE_VERSION, (exc.oid, exc.version, exc.current)
    elif isinstance(exc, ChecksumError):
        status, fields = Status.CHECKSUM, (exc.oid, 0, 0)
    elif isinstance(exc, WrongEpoch):
        status, fields = Status.WRONG_EPOCH, (exc.theirs, exc.ours, 0)
    elif isinstance(exc, Fenced):
        status, fields = Status.FENCED, (exc.vid, exc.token, exc.newest)
    elif isinstance(exc, NotAccepting):
        status = Status.NOT_ACCEPTING
    elif isinstance(exc, StoreClosed):
        status = Status.STORE_CLOSED
    elif isinstance(exc, PeerUnavailable):
        status = Status.PEER_UNAVAILABLE
        payload = _message(exc.peer + "\0" + str(exc))
    elif isinstance(exc, BlockError):
        status, fields = Status.BLOCK_ERROR, (int(exc.errno), 0, 0)
    elif isinstance(exc, ValueError):
        status, fields = Status.BLOCK_ERROR, (int(Errno.EINVAL), 0, 0)
    else:
        status, fields = Status.BLOCK_ERROR, (int(Errno.EIO), 0, 0)
        payload = _message(f"internal error: {type(exc).__name__}: {exc}")
    return Reply(request.op, request.request_id, status, fields, payload)


E = TypeVar("E", bound=BlockError)


def _exactly(cls: type[E], errno: Errno, message: str) -> E:
    """An exception of type `cls` whose message is `message`, verbatim."""
    exc = cls.__new__(cls)
    BlockError.__init__(exc, errno, message)
    return exc


def reply_error(reply: Reply) -> BlockError:
    """The exception an error reply stands for (same type, fields and message)."""
    a, b, c = reply.fields
    message = bytes(reply.payload).decode()
    status = reply.status
    if status == Status.OBJECT_NOT_FOUND:
        return ObjectNotFound(a)
    if status == Status.STALE_VERSION:
        return StaleVersion(a, b, c)
    if status == Status.CHECKSUM:
        checksum = _exactly(ChecksumError, Errno.EIO, message)
        checksum.oid = a
        return checksum
    if status == Status.WRONG_EPOCH:
        return WrongEpoch(a, b)
    if status == Status.FENCED:
        return Fenced(a, b, c)
    if status == Status.NOT_ACCEPTING:
        return NotAccepting(message)
    if status == Status.STORE_CLOSED:
        return StoreClosed()
    if status == Status.PEER_UNAVAILABLE:
        peer, _, text = message.partition("\0")
        unavailable = _exactly(PeerUnavailable, Errno.EIO, text)
        unavailable.peer = peer
        return unavailable
    if status == Status.BLOCK_ERROR:
        return BlockError(Errno(a), message)
    raise ValueError(f"{status.name} is not an error")
