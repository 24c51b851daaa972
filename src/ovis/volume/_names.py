"""Volume names, snapshot tags, `name@tag` specs and sizes: what is allowed."""

from __future__ import annotations

from ovis.store import MAX_OBJECT_SIZE

from ._errors import InvalidVolumeArgument
from ._inode import MAX_OBJECTS, MIN_OBJECT_SIZE

SECTOR = 512
MAX_NAME_BYTES = 255


def check_name(name: str, what: str = "volume name") -> None:
    """Raise InvalidVolumeArgument unless `name` is a usable name or tag.

    Names are what people type and what NBD exports are called: printable,
    no '@' (it separates the tag) or '/', no surrounding spaces.
    """
    problem = None
    if not name:
        problem = "it is empty"
    elif len(name.encode()) > MAX_NAME_BYTES:
        problem = f"it is longer than {MAX_NAME_BYTES} bytes"
    elif "@" in name or "/" in name:
        problem = "it contains '@' or '/'"
    elif not name.isprintable() or name != name.strip() or name in (".", ".."):
        problem = "it has control characters, surrounding spaces, or is '.' or '..'"
    if problem:
        raise InvalidVolumeArgument(f"invalid {what} {name!r}: {problem}")


def parse_spec(spec: str) -> tuple[str, str]:
    """`name` -> (name, ''); `name@tag` -> (name, tag)."""
    name, at, tag = spec.partition("@")
    check_name(name)
    if at:
        check_name(tag, "snapshot tag")
    return name, tag


def check_size(size: int, object_size: int) -> None:
    """Raise InvalidVolumeArgument unless `size` is a whole number of sectors that fits."""
    limit = MAX_OBJECTS * object_size
    if size <= 0 or size % SECTOR or size > limit:
        raise InvalidVolumeArgument(
            f"invalid size {size}: it must be a positive multiple of {SECTOR} "
            f"of at most {limit} bytes with {object_size}-byte objects"
        )


def check_object_size(object_size: int) -> None:
    """Raise InvalidVolumeArgument unless `object_size` is a power of two the store can hold."""
    if object_size & (object_size - 1) or not MIN_OBJECT_SIZE <= object_size <= MAX_OBJECT_SIZE:
        raise InvalidVolumeArgument(
            f"invalid object size {object_size}: it must be a power of two "
            f"from {MIN_OBJECT_SIZE} to {MAX_OBJECT_SIZE}"
        )
