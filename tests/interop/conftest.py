"""Interop fixtures: TLS certificates made with openssl, and the export variants."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need, run

from ._support import port_of, qemu_image


@dataclasses.dataclass(frozen=True)
class Certs:
    """A CA, a server certificate for 127.0.0.1/::1/localhost, and a client certificate.

    `client_dir` is laid out as libnbd (tls-certificates=DIR) and qemu
    (tls-creds-x509,dir=DIR) expect: ca-cert.pem, client-cert.pem, client-key.pem.
    `ca_only_dir` holds only ca-cert.pem: a client that trusts the server but
    has no certificate of its own.
    """

    ca: Path
    server_cert: Path
    server_key: Path
    client_dir: Path
    ca_only_dir: Path

    def serve_args(self, *, verify_clients: bool = False) -> list[str]:
        args = ["--tls-cert", str(self.server_cert), "--tls-key", str(self.server_key)]
        if verify_clients:
            args += ["--tls-ca", str(self.ca)]
        return args


def _openssl(command: str, *args: str, cwd: Path) -> None:
    run(["openssl", *command.split(), *args], cwd=cwd, timeout=60)


# P-256 keys: quick to make, and both GnuTLS (qemu, libnbd) and Python's ssl take them.
NEW_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
LEAF = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"


def _sign(base: Path, name: str, subject: str, extensions: str) -> None:
    (base / f"{name}.ext").write_text(LEAF + extensions)
    _openssl(f"req {NEW_KEY} -keyout {name}-key.pem -out {name}.csr -subj", subject, cwd=base)
    _openssl(
        f"x509 -req -in {name}.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -days 2"
        f" -out {name}-cert.pem -extfile {name}.ext",
        cwd=base,
    )


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    need("openssl")
    base = tmp_path_factory.mktemp("tls")
    _openssl(
        f"req -x509 {NEW_KEY} -keyout ca-key.pem -out ca-cert.pem -days 2"
        " -addext basicConstraints=critical,CA:TRUE"
        " -addext keyUsage=critical,keyCertSign,cRLSign -subj",
        "/CN=ovis interop test CA",
        cwd=base,
    )
    _sign(
        base,
        "server",
        "/CN=127.0.0.1",
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n",
    )
    _sign(base, "client", "/CN=ovis interop client", "extendedKeyUsage=clientAuth\n")
    client_dir = base / "client"
    client_dir.mkdir()
    for name in ("ca-cert.pem", "client-cert.pem", "client-key.pem"):
        shutil.copy(base / name, client_dir / name)
    ca_only = base / "ca-only"
    ca_only.mkdir()
    shutil.copy(base / "ca-cert.pem", ca_only / "ca-cert.pem")
    return Certs(
        ca=base / "ca-cert.pem",
        server_cert=base / "server-cert.pem",
        server_key=base / "server-key.pem",
        client_dir=client_dir,
        ca_only_dir=ca_only,
    )


def tls_uri(served: Served, name: str, cert_dir: Path) -> str:
    """The libnbd URI for a TLS connection to `served` (nbds://…?tls-certificates=DIR)."""
    plain = served.uri(name)
    assert plain.startswith("nbd://"), plain
    return f"nbds://{plain.removeprefix('nbd://')}?tls-certificates={cert_dir}"


def tls_qemu_image(served: Served, name: str, cert_dir: Path) -> list[str]:
    """qemu-img/qemu-io arguments for a TLS connection (x509 credentials in cert_dir)."""
    return [
        "--object",
        f"tls-creds-x509,id=tls0,dir={cert_dir},endpoint=client",
        "--image-opts",
        f"driver=nbd,host=127.0.0.1,port={port_of(served)},export={name},tls-creds=tls0",
    ]


VARIANTS = ["plain", "readonly", "cow", "unix", "tls", "workers", "cow-workers"]


@dataclasses.dataclass(frozen=True)
class Export:
    """One export of a running server, and how each client names it."""

    variant: str
    served: Served
    image: Path
    uri: str  # for libnbd tools
    qemu: list[str]  # for qemu-img / qemu-io

    @property
    def writable(self) -> bool:
        return self.variant != "readonly"

    @property
    def private(self) -> bool:
        """Writes stay in the connection's own overlay (and never reach the image)."""
        return self.variant in ("cow", "cow-workers")


@pytest.fixture
def serve_variant(
    serve: Callable[..., Served], tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[str, Path], Export]:
    """Start `ovis serve` on an image in one of VARIANTS."""

    def _start(variant: str, image: Path) -> Export:
        name = "disk"
        args = [str(image), "--name", name, "--port", "0"]
        if variant == "readonly":
            args.append("--readonly")
        elif variant == "cow":
            args.append("--cow")
        elif variant == "workers":  # connections served by worker processes
            args += ["--workers", "2"]
        elif variant == "cow-workers":
            args += ["--cow", "--workers", "2"]
        elif variant == "unix":
            args = [str(image), "--name", name, "--unix", str(tmp_path / "nbd.sock")]
        elif variant == "tls":
            tls: Certs = request.getfixturevalue("certs")
            served = serve(*args, *tls.serve_args(verify_clients=True))
            return Export(
                variant,
                served,
                image,
                tls_uri(served, name, tls.client_dir),
                tls_qemu_image(served, name, tls.client_dir),
            )
        elif variant != "plain":
            raise ValueError(f"unknown variant {variant}")
        served = serve(*args)
        return Export(variant, served, image, served.uri(name), qemu_image(served.uri(name)))

    return _start
