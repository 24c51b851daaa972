"""ovis.node re-exports exactly its public names, each documented."""

from __future__ import annotations

import ovis.node


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in ovis.node.__all__:
        obj = getattr(ovis.node, name)
        assert obj.__module__.startswith("ovis.node."), name
        assert obj.__doc__, f"{name} has no docstring"


def test_no_public_class_is_left_out() -> None:
    public = {
        name
        for name, obj in vars(ovis.node).items()
        if not name.startswith("_") and isinstance(obj, type)
    }
    assert public <= set(ovis.node.__all__)
