"""The package re-exports exactly its public names."""

from __future__ import annotations

import ovis.block


def test_all_lists_the_public_names() -> None:
    assert sorted(ovis.block.__all__) == [
        "BlockDevice",
        "BlockError",
        "Capabilities",
        "CheckedDevice",
        "CowFilter",
        "DelayFilter",
        "ErrorFilter",
        "Extent",
        "FileDevice",
        "Filter",
        "MemoryDevice",
        "NbdDevice",
        "ReadOnlyFilter",
        "Transparent",
    ]


def test_every_exported_name_exists_and_is_public_api() -> None:
    for name in ovis.block.__all__:
        obj = getattr(ovis.block, name)
        assert obj.__module__.startswith("ovis.block."), name
        assert obj.__doc__, f"{name} has no docstring"


def test_no_public_name_is_left_out() -> None:
    public = {
        name
        for name, obj in vars(ovis.block).items()
        if not name.startswith("_") and isinstance(obj, type)
    }
    assert public <= set(ovis.block.__all__)
