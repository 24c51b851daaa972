"""Bitmap set/clear/find/runs/count agree with a list of booleans."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ovis.migrate import Bitmap

_NBITS = st.integers(0, 200)


@st.composite
def _ops(draw: st.DrawFn) -> tuple[int, list[tuple[str, int, int]]]:
    nbits = draw(st.integers(1, 200))
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["set", "clear", "find0", "find1", "runs0", "runs1"]),
                st.integers(0, nbits - 1),
                st.integers(0, nbits),
            ),
            max_size=40,
        )
    )
    return nbits, ops


@settings(max_examples=300, deadline=None)
@given(_ops())
def test_bitmap_matches_a_list(case: tuple[int, list[tuple[str, int, int]]]) -> None:
    nbits, ops = case
    bitmap, model = Bitmap(nbits), [False] * nbits
    for op, a, b in ops:
        if op in ("set", "clear"):
            count = min(b, nbits - a)
            getattr(bitmap, op)(a, count)
            model[a : a + count] = [op == "set"] * count
        elif op.startswith("find"):
            value = op == "find1"
            end = max(a, b)
            expected = next((i for i in range(a, end) if model[i] == value), end)
            assert bitmap.find(value, a, end) == expected
        else:
            value = op == "runs1"
            runs, i = [], 0
            while i < nbits:
                if model[i] == value:
                    j = i
                    while j < nbits and model[j] == value:
                        j += 1
                    runs.append((i, j - i))
                    i = j
                else:
                    i += 1
            assert list(bitmap.runs(value)) == runs
        assert bitmap.count == sum(model)
        assert [bitmap[i] for i in range(nbits)] == model
    assert bitmap.all_set() == all(model)


def test_large_bitmap_finds_quickly() -> None:
    bitmap = Bitmap(16 << 20)  # 1 TiB in 64 KiB blocks
    bitmap.set(0, bitmap.nbits)
    bitmap.clear(bitmap.nbits - 3, 1)
    assert bitmap.find(False, 0) == bitmap.nbits - 3
    assert bitmap.count == bitmap.nbits - 1
