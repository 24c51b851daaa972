"""ovis.cluster re-exports exactly its public names."""

from __future__ import annotations

import ovis.cluster


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in ovis.cluster.__all__:
        obj = getattr(ovis.cluster, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__module__.startswith("ovis.cluster."), name
            assert obj.__doc__, f"{name} has no docstring"


def test_no_public_class_is_left_out() -> None:
    public = {
        name
        for name, obj in vars(ovis.cluster).items()
        if not name.startswith("_") and isinstance(obj, type)
    }
    assert public <= set(ovis.cluster.__all__)
