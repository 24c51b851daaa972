"""TLS (STARTTLS with X.509): who gets in, and what works once in.

Certificates come from the session's openssl-made CA (conftest.certs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need, run

from ._support import IMAGE_SIZE, MiB, nbdinfo_json, nbdsh, qemu_io, sha256_file
from .conftest import Certs, tls_qemu_image, tls_uri

pytestmark = pytest.mark.interop


def test_plain_client_refused_when_tls_required(
    serve: Callable[..., Served], image: Path, certs: Certs
) -> None:
    need("nbdinfo", "qemu-img")
    served = serve(str(image), "--name", "disk", "--port", "0", *certs.serve_args())
    result = run(["nbdinfo", served.uri("disk")], check=False)
    assert result.returncode != 0
    # Refused in negotiation (ERR_TLS_REQD), not by a dropped connection.
    assert "server replied with error" in result.stderr, result.stderr
    qemu = run(["qemu-img", "info", "-f", "raw", served.uri("disk")], check=False)
    assert qemu.returncode != 0
    # The same server lets a TLS client in.
    assert nbdinfo_json(tls_uri(served, "disk", certs.client_dir))["TLS"] is True


def test_plain_listing_refused_when_tls_required(
    serve: Callable[..., Served], image: Path, certs: Certs
) -> None:
    need("nbdinfo")
    served = serve(str(image), "--name", "secret-name", "--port", "0", *certs.serve_args())
    result = run(["nbdinfo", "--list", served.uri("")], check=False)
    assert "secret-name" not in result.stdout


def test_tls_allow_serves_plain_and_tls_clients(
    serve: Callable[..., Served], image: Path, certs: Certs
) -> None:
    need("nbdinfo", "nbdsh")
    served = serve(str(image), "--name", "disk", "--port", "0", "--tls=allow", *certs.serve_args())
    plain = nbdinfo_json(served.uri("disk"))
    assert plain["TLS"] is False
    assert plain["exports"][0]["export-size"] == IMAGE_SIZE
    secure = tls_uri(served, "disk", certs.client_dir)
    assert nbdinfo_json(secure)["TLS"] is True
    nbdsh(secure, "h.pwrite(b'tls!' * 1024, 4 << 20); h.flush()")
    nbdsh(served.uri("disk"), "assert h.pread(4096, 4 << 20) == b'tls!' * 1024")


def test_client_without_certificate_refused_when_server_checks_clients(
    serve: Callable[..., Served], image: Path, certs: Certs
) -> None:
    need("nbdinfo")
    served = serve(
        str(image), "--name", "disk", "--port", "0", *certs.serve_args(verify_clients=True)
    )
    result = run(["nbdinfo", tls_uri(served, "disk", certs.ca_only_dir)], check=False)
    assert result.returncode != 0
    assert nbdinfo_json(tls_uri(served, "disk", certs.client_dir))["TLS"] is True


def test_qemu_img_and_nbdsh_over_tls(
    serve: Callable[..., Served], image: Path, certs: Certs, tmp_path: Path
) -> None:
    need("qemu-img", "qemu-io", "nbdsh")
    served = serve(
        str(image), "--name", "disk", "--port", "0", *certs.serve_args(verify_clients=True)
    )
    qemu = tls_qemu_image(served, "disk", certs.client_dir)
    info = json.loads(run(["qemu-img", "info", "--output=json", *qemu]).stdout)
    assert info["virtual-size"] == IMAGE_SIZE
    qemu_io(qemu, "write -P 0x7e 16M 64k", "aio_write -P 0x7f 20M 64k", "aio_flush")
    out = tmp_path / "out.img"
    run(["qemu-img", "convert", *qemu, "-O", "raw", str(out)])
    run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(out), str(image)])
    assert sha256_file(out) == sha256_file(image)
    nbdsh(
        tls_uri(served, "disk", certs.client_dir),
        f"""
        assert h.pread(65536, {16 * MiB}) == b'\\x7e' * 65536
        assert h.pread(65536, {20 * MiB}) == b'\\x7f' * 65536
        """,
    )


def test_tls_over_a_unix_socket(
    serve: Callable[..., Served], image: Path, certs: Certs, tmp_path: Path
) -> None:
    need("nbdinfo", "nbdcopy")
    sock = tmp_path / "tls.sock"
    serve(str(image), "--name", "disk", "--unix", str(sock), *certs.serve_args())
    secure = f"nbds+unix:///disk?socket={sock}&tls-certificates={certs.client_dir}"
    document = nbdinfo_json(secure)
    assert document["TLS"] is True
    assert document["exports"][0]["export-size"] == IMAGE_SIZE
    out = tmp_path / "out.img"
    run(["nbdcopy", secure, str(out)])
    assert sha256_file(out) == sha256_file(image)
    plain = run(["nbdinfo", f"nbd+unix:///disk?socket={sock}"], check=False)
    assert plain.returncode != 0
