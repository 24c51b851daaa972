"""fio's nbd engine: random writes at queue depth, then every block read back and verified."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Served, make_image, need, run

from ._support import MiB

pytestmark = pytest.mark.interop


def fio(uri: str, workdir: Path, *options: str) -> list[dict[str, Any]]:
    result = run(
        [
            "fio", "--ioengine=nbd", f"--uri={uri}", "--output-format=json",
            "--verify_state_save=0", *options,
        ],
        timeout=60,
        cwd=workdir,  # fio may still leave files behind: never in the work tree
    )  # fmt: skip
    # The nbd engine prints "fio: connected to NBD server" before the JSON.
    document = json.loads(result.stdout[result.stdout.index("{") :])
    jobs: list[dict[str, Any]] = document["jobs"]
    assert all(job["error"] == 0 for job in jobs), jobs
    return jobs


@pytest.fixture
def uri(serve: Callable[..., Served], tmp_path: Path) -> str:
    need("fio")
    image = make_image(tmp_path / "fio.img", 16 * MiB)
    return serve(str(image), "--name", "fio", "--port", "0").uri("fio")


def test_randwrite_verify_crc32c(uri: str, tmp_path: Path) -> None:
    (job,) = fio(
        uri, tmp_path, "--name=randwrite", "--rw=randwrite", "--bs=4k", "--size=16M",
        "--iodepth=16", "--verify=crc32c", "--verify_fatal=1",
    )  # fmt: skip
    assert job["write"]["io_bytes"] == 16 * MiB
    assert job["read"]["io_bytes"] == 16 * MiB  # the verify pass read every block


def test_parallel_jobs_with_mixed_block_sizes(uri: str, tmp_path: Path) -> None:
    # Two connections at once, each in its own half, block sizes 512 B to 128 KiB.
    jobs = fio(
        uri, tmp_path, "--name=mixed", "--rw=randwrite", "--bsrange=512-128k", "--size=8M",
        "--numjobs=2", "--offset_increment=8M", "--iodepth=8", "--verify=md5",
        "--verify_fatal=1", "--runtime=5",
    )  # fmt: skip
    assert len(jobs) == 2
    for job in jobs:
        assert job["write"]["io_bytes"] > 0
        assert job["read"]["io_bytes"] > 0
