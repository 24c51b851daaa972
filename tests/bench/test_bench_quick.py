"""bench/run --quick still works: it serves, runs every workload and writes its JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need

pytestmark = pytest.mark.interop

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run"
ROWS = {
    "seq_read", "rand_read", "seq_write", "rand_write", "nbdcopy",
    "cpu_s", "nbdcopy_cpu_s", "peak_rss_mib",
}  # fmt: skip


def test_quick_bench_writes_every_row(tmp_path: Path) -> None:
    need("fio", "nbdcopy")
    results = tmp_path / "quick.json"
    argv = [str(BENCH), "--quick", "--servers", "ovis", "--json", str(results)]
    done = subprocess.run(
        [*argv, "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(results.read_text())
    assert {row["key"] for row in report["rows"]} == ROWS
    assert report["options"]["quick"] is True
    assert report["notes"] == []
    (rep,) = report["servers"]["ovis"]["reps"]
    assert set(rep) == ROWS
    assert all(value is not None and value > 0 for value in rep.values()), rep
    assert report["servers"]["ovis"]["median"] == rep
    assert "seq read 1M QD16" in done.stdout
