"""TLS contexts for NBD's STARTTLS (x509, optional client-certificate checks)."""

from __future__ import annotations

import ssl


class TLSConfigError(Exception):
    """A certificate or key cannot be loaded; the message names the file."""


def server_context(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    """TLS >= 1.2; with `ca`, clients must present a certificate signed by it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None
    if ca is not None:
        try:
            context.load_verify_locations(ca)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load TLS CA {ca}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    ca: str | None = None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """A client context trusting `ca` (and presenting `cert` if given)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is not None:
        context.load_verify_locations(ca)
    else:
        context.load_default_certs()
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context
