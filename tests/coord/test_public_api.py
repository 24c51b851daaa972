"""ovis.coord re-exports exactly its public names."""

from __future__ import annotations

import ovis.coord


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in ovis.coord.__all__:
        obj = getattr(ovis.coord, name)
        if isinstance(obj, type):
            assert obj.__module__.startswith("ovis.coord."), name
            assert obj.__doc__, f"{name} has no docstring"


def test_no_public_class_is_left_out() -> None:
    public = {
        name
        for name, obj in vars(ovis.coord).items()
        if not name.startswith("_") and isinstance(obj, type)
    }
    assert public <= set(ovis.coord.__all__)
