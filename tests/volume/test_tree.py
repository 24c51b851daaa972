"""tree() shows snapshot chains and the clones branching from them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ovis.volume import VolumeNode

from .helpers import OBJ, memory_library


def _shape(nodes: list[VolumeNode] | tuple[VolumeNode, ...]) -> list[object]:
    return [(node.info.spec, _shape(node.children)) for node in nodes]


def test_tree_follows_parents_and_survives_deleted_links(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("base", OBJ, object_size=OBJ)
            await library.snapshot("base", "s1")
            await library.snapshot("base", "s2")
            await library.clone("base@s1", "fork")
            await library.create("other", OBJ, object_size=OBJ)
            assert _shape(await library.tree()) == [
                ("base@s1", [("base@s2", [("base", [])]), ("fork", [])]),
                ("other", []),
            ]
            await library.delete("base@s1")
            assert _shape(await library.tree()) == [
                ("base@s2", [("base", [])]),
                ("fork", []),
                ("other", []),
            ]

    asyncio.run(main())
