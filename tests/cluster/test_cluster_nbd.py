"""Real NBD clients on a 3-node cluster (copies 2): what one node writes, every node reads.

Writes go through n0; reads come back through n1 and n2 once the writer has disconnected
(a volume has one read-write attachment in the cluster at a time).  Snapshots are
read-only, so any node serves them while the volume is attached elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovis.nbd import ProtocolError
from ovis.nbd.client import NbdClient, list_exports
from tests.conftest import need, run

from .harness import ETCD, Cluster

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(ETCD is None, reason="etcd is not installed"),
]

MiB = 1024 * 1024
COPIES = 2


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    failed = request.session.testsfailed
    with Cluster(tmp_path_factory.mktemp("nbd-cluster"), nodes=3, copies=COPIES) as running:
        yield running
        if request.session.testsfailed > failed:
            running.dump_logs()


def create(cluster: Cluster, name: str, size: str) -> None:
    """Create a volume through n0 and wait until every node's NBD listing shows it."""
    cluster.vdi("create", name, size)
    asyncio.run(listed_everywhere(cluster, name))


async def listed_everywhere(cluster: Cluster, spec: str) -> None:
    """Wait until every node's NBD listing shows `spec`.

    The other nodes learn of a change from the catalog watch a few ms later
    (docs/cluster.md, Limits).
    """
    async with asyncio.timeout(10):
        for node in range(len(cluster.nodes)):
            while spec not in [n for n, _ in await list_exports(cluster.nbd_uri(node, ""))]:
                await asyncio.sleep(0.02)


def retry_while_attached(cmd: list[str], timeout: float = 15) -> subprocess.CompletedProcess[str]:
    """Run a client until the volume is no longer attached on the node that wrote it.

    The writer's node gives the lease back when its last client has gone, a moment
    after the client exits.  (libnbd tools do not show the server's reason, so any
    refusal of NBD_OPT_GO counts as "still attached".)
    """
    deadline = time.monotonic() + timeout
    while True:
        result = run(cmd, check=False)
        if result.returncode == 0:
            return result
        refused = "attached" in result.stderr or "opt_go" in result.stderr
        if not refused or time.monotonic() > deadline:
            raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stderr}")
        time.sleep(0.1)


def patterned(path: Path, size: int) -> Path:
    """Data at a few places (one straddling two 4 MiB objects), holes between."""
    with open(path, "wb") as f:
        f.truncate(size)
        for at, seed in ((0, b"a"), (4 * MiB - 12288, b"b"), (size // 2 + 4096, b"c")):
            f.seek(at)
            f.write(b"".join(hashlib.sha256(seed + i.to_bytes(2)).digest() for i in range(8192)))
    return path


def test_qemu_img_through_one_node_compares_through_the_others(
    cluster: Cluster, tmp_path: Path
) -> None:
    need("qemu-img")
    create(cluster, "img", "40M")
    source = patterned(tmp_path / "source.img", 40 * MiB)
    run(["qemu-img", "create", "-f", "raw", cluster.nbd_uri(0, "img"), "40M"])
    convert = ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(source)]
    run([*convert, cluster.nbd_uri(0, "img")])
    for node in (1, 2):
        cmd = ["qemu-img", "compare", "-f", "raw", "-F", "raw", str(source)]
        retry_while_attached([*cmd, cluster.nbd_uri(node, "img")])


def test_qemu_io_patterns_read_back_through_every_node(cluster: Cluster) -> None:
    need("qemu-io")
    create(cluster, "io", "24M")
    writes = ["write -P 0xab 0 64k", "write -P 0xcd 4190208 8k", "write -z 8M 4M",
              "write -f -P 0x5e 20M 1M", "flush"]  # fmt: skip
    reads = ["read -P 0xab 0 64k", "read -P 0xcd 4190208 8k", "read -P 0 8M 4M",
             "read -P 0x5e 20M 1M", "read -P 0 64k 4000k"]  # fmt: skip
    qemu_io(cluster.nbd_uri(0, "io"), *writes, *reads)
    for node in (1, 2):
        qemu_io(cluster.nbd_uri(node, "io"), *reads)


def qemu_io(uri: str, *commands: str, timeout: float = 15) -> None:
    """qemu-io on a raw export; retried while the volume is attached on another node."""
    args = ["qemu-io", "-f", "raw"]
    for command in commands:
        args += ["-c", command]
    result = retry_while_attached([*args, uri], timeout)
    output = result.stdout + result.stderr
    assert "fail" not in output.lower() and "error" not in output.lower(), output


def test_fio_writes_through_one_node_and_verifies_through_another(cluster: Cluster) -> None:
    need("fio")
    create(cluster, "fio", "16M")
    job = ["fio", "--name=cluster", "--ioengine=nbd", "--rw=randwrite", "--bs=4k",
           "--size=16M", "--iodepth=16", "--verify=crc32c", "--verify_fatal=1",
           "--verify_state_save=0", "--output-format=terse"]  # fmt: skip
    result = run([*job, f"--uri={cluster.nbd_uri(0, 'fio')}", "--fsync=16", "--do_verify=1"])
    assert "verify" not in result.stderr.lower(), result.stderr
    result = retry_while_attached([*job, f"--uri={cluster.nbd_uri(1, 'fio')}", "--verify_only"])
    assert "verify" not in result.stderr.lower(), result.stderr


def test_second_read_write_attach_is_refused_while_the_first_is_connected(
    cluster: Cluster,
) -> None:
    need("nbdinfo", "qemu-img")
    create(cluster, "single", "8M")

    async def attached_on_n0() -> None:
        client = await NbdClient.connect(cluster.nbd_uri(0, "single"))
        try:
            await client.write(0, b"\x42" * 4096)
            for node in (1, 2):
                uri = cluster.nbd_uri(node, "single")
                # nbdinfo (libnbd) does not print the server's reason, only the refusal.
                result = await asyncio.to_thread(run, ["nbdinfo", uri], check=False)
                assert result.returncode != 0 and "opt_go" in result.stderr, result
                result = await asyncio.to_thread(run, ["qemu-img", "info", uri], check=False)
                assert result.returncode != 0, result.stdout
                assert "attached read-write on node n0" in result.stderr, result.stderr
                with pytest.raises(ProtocolError, match="attached read-write on node n0"):
                    await NbdClient.connect(uri)
        finally:
            await client.aclose()

    asyncio.run(attached_on_n0())
    result = retry_while_attached(["nbdinfo", "--json", cluster.nbd_uri(1, "single")])
    assert '"export-size": 8388608' in result.stdout


def test_snapshot_is_readable_from_every_node(cluster: Cluster) -> None:
    create(cluster, "snap", "16M")
    before = b"".join(hashlib.sha256(i.to_bytes(2)).digest() for i in range(2048))  # 64 KiB

    async def write_snapshot_overwrite() -> None:
        client = await NbdClient.connect(cluster.nbd_uri(0, "snap"))
        try:
            await client.write(5 * MiB, before)
            await client.flush()
            await asyncio.to_thread(cluster.vdi, "snapshot", "snap", "--tag", "t1")
            await client.write(5 * MiB, b"\x77" * len(before))
            await client.flush()
            for node in (1, 2):  # while n0 still holds the volume read-write
                snap = await NbdClient.connect(cluster.nbd_uri(node, "snap@t1"))
                try:
                    assert snap.read_only
                    assert await snap.read(5 * MiB, len(before)) == before
                finally:
                    await snap.aclose()
        finally:
            await client.aclose()

    asyncio.run(write_snapshot_overwrite())


def test_objects_are_stored_on_copies_nodes(cluster: Cluster) -> None:
    create(cluster, "spread", "64M")
    before = {n: cluster.object_files(n) for n in range(3)}
    chunk = 1 * MiB
    data = [hashlib.sha256(bytes([i])).digest() * (chunk // 32) for i in range(32)]

    async def fill() -> None:
        client = await NbdClient.connect(cluster.nbd_uri(0, "spread"))
        try:
            await asyncio.gather(*(client.write(i * 2 * chunk, d) for i, d in enumerate(data)))
            await client.flush()
        finally:
            await client.aclose()

    asyncio.run(fill())  # 32 MiB in 16 objects of 4 MiB, each half written
    new: dict[str, int] = {}
    holders: dict[str, int] = {}
    for node in range(3):
        for name, allocated in cluster.object_files(node).items():
            if name not in before[node]:
                new[name] = new.get(name, 0) + allocated
                holders[name] = holders.get(name, 0) + 1
    data_objects = [name for name, n in holders.items() if new[name] >= COPIES * 2 * MiB]
    assert len(data_objects) == 16, holders
    assert {holders[name] for name in data_objects} == {COPIES}, holders
    single = 32 * MiB
    total = sum(new[name] for name in data_objects)
    assert COPIES * single <= total <= COPIES * single * 1.1, (total, COPIES * single)


def test_a_volume_made_through_one_node_opens_at_once_through_the_others(
    cluster: Cluster,
) -> None:
    """The other nodes' listings follow the catalog's watch, a few ms behind; a client
    asking for a name its node does not know yet gets it after a refresh, not a refusal."""

    async def open_through(node: int, name: str) -> None:
        client = await NbdClient.connect(cluster.nbd_uri(node, name))
        try:
            assert client.size == 16 * MiB
        finally:
            await client.aclose()

    for n in range(4):  # created through n0, opened through n1 or n2 at once
        cluster.vdi("create", f"fresh{n}", "16M")
        asyncio.run(open_through(1 + n % 2, f"fresh{n}"))


def test_node_recovery_shows_progress_and_sets_the_throttle(cluster: Cluster) -> None:
    api = ["--node", cluster.api(1)]
    shown = cluster.cli("node", "recovery", *api).stdout
    assert "state: " in shown and "max_rate: unlimited" in shown, shown
    assert "10.0 MiB" in cluster.cli("node", "recovery", *api, "set-throttle", "10M").stdout
    status = json.loads(cluster.cli("node", "recovery", *api, "--json").stdout)
    assert status["max_rate"] == 10 * MiB and status["suspect"] == 0, status
    assert "max_rate: 10.0 MiB/s" in cluster.cli("node", "recovery", *api).stdout
    cluster.cli("node", "recovery", *api, "set-throttle", "0")
