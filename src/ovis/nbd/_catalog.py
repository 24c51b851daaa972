"""What the server handshake looks exports up in: ExportInfo, the ExportCatalog a
backend provides per connection, and how a lookup refuses."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ._constants import BASE_ALLOCATION
from ._constants import Reply as R
from ._constants import TransmissionFlag as TF


@dataclasses.dataclass(frozen=True, slots=True)
class ExportInfo:
    """What the handshake tells a client about one export."""

    name: str
    size: int
    flags: TF
    description: str = ""
    min_block: int = 1
    preferred_block: int = 4096
    max_block: int = 32 * 1024 * 1024
    meta_contexts: tuple[str, ...] = (BASE_ALLOCATION,)


class ExportCatalog(Protocol):
    """Where the handshake looks exports up; built per connection (it may know the peer)."""

    def lookup(self, name: str) -> ExportInfo | R | Refused:
        """The export called `name` ("" is the default), or an error reply (with a reason)."""
        ...

    def listing(self) -> Sequence[tuple[str, str]]:
        """(name, description) of every export this client may see."""
        ...


@runtime_checkable
class Refreshable(Protocol):
    """A catalog that may lag behind: refreshed before an unknown name is refused."""

    async def refresh(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    """A lookup refusal with a reason for the client (sent with the error reply)."""

    reply: R
    message: str


def refusal(name: str, answer: R | Refused) -> tuple[R, bytes]:
    """The error reply and its message for a lookup that found no export."""
    if isinstance(answer, Refused):
        return answer.reply, answer.message.encode()
    return answer, f"export {name!r} is not available".encode()
