"""`ovis serve`: the nbd-server / xnbd-server / qemu-nbd replacement."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from ovis._units import parse_size
from ovis.nbd._handshake_server import TLSMode
from ovis.nbd.server import ServerLimits
from ovis.serve import (
    ConfigError,
    ControlError,
    ExportError,
    ExportSpec,
    ServeError,
    ServeOptions,
    TLSConfigError,
    default_control_path,
    load_config,
    run,
)
from ovis.serve._config import parse_allow

from . import _daemon

_FAILURES = (ServeError, ConfigError, ExportError, ControlError, TLSConfigError)


def _size(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("image", required=False, type=click.Path(dir_okay=False))
@click.option("--name", help="Export name (default: the image's file name); '' also works.")
@click.option("--description", default="", help="Text shown by LIST (nbdinfo --list).")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML file of exports.")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=10809, show_default=True, type=click.IntRange(0, 65535))
@click.option("--unix", type=click.Path(), help="Listen on a unix socket instead of TCP.")
@click.option("--readonly", is_flag=True, help="Refuse writes (EPERM).")
@click.option("--cow", is_flag=True, help="Private copy-on-write overlay per connection.")
@click.option("--cow-persist", type=click.Path(dir_okay=False), help="Keep one overlay here.")
@click.option(
    "--proxy",
    "proxy",
    metavar="URI",
    help="Proxy mode: serve the export at URI, caching it locally (xnbd --proxy).",
)
@click.option("--cache", type=click.Path(dir_okay=False), help="Proxy mode: the local cache.")
@click.option("--bitmap", type=click.Path(dir_okay=False), help="Proxy mode: cached-block map.")
@click.option("--max-rate", callback=_size, help="Proxy mode: background fill rate per second.")
@click.option(
    "--auto-switch",
    is_flag=True,
    help="Proxy mode: stop using the source once everything is cached.",
)
@click.option(
    "--defer-fill",
    is_flag=True,
    help="Proxy mode: fill in the background only on `ovis migrate fill`.",
)
@click.option("--allow", multiple=True, help="Allowed client address or CIDR (repeatable).")
@click.option("--size", callback=_size, help="Override the export size (e.g. 10G).")
@click.option(
    "--single-writer",
    is_flag=True,
    help="One client host writes at a time; see `ovis export handover`.",
)
@click.option(
    "--tls",
    "tls_mode",
    type=click.Choice(["off", "allow", "require"]),
    default=None,
    help="STARTTLS policy (default: require when a certificate is given).",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False))
@click.option("--tls-key", type=click.Path(dir_okay=False))
@click.option("--tls-ca", type=click.Path(dir_okay=False), help="Verify client certificates.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), help="Close idle clients (s).")
@click.option(
    "--handshake-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Cut off clients that have not finished negotiating (s).",
)
@click.option("--max-connections", default=512, show_default=True, type=click.IntRange(1))
@click.option(
    "--max-queue-size",
    default=128,
    show_default=True,
    type=click.IntRange(1),
    help="Requests in progress per connection.",
)
@click.option(
    "--max-buf-size",
    default="64M",
    show_default=True,
    callback=_size,
    help="Payload bytes in progress per connection.",
)
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Worker processes for negotiated connections (0: serve all in one process).",
)
@click.option("--inetd", is_flag=True, help="Serve one client on stdin (inetd mode).")
@click.option("--control", type=click.Path(), help="Control socket for `ovis export`.")
@click.option("--log-file", type=click.Path(dir_okay=False))
@click.option("--syslog", is_flag=True, help="Log to syslog.")
@click.option("--pidfile", type=click.Path(dir_okay=False))
@click.option("--daemonize", is_flag=True, help="Run in the background once listening.")
@click.option("-v", "--verbose", count=True)
def serve(
    image: str | None,
    name: str | None,
    description: str,
    config: str | None,
    bind: str,
    port: int,
    unix: str | None,
    readonly: bool,
    cow: bool,
    cow_persist: str | None,
    allow: tuple[str, ...],
    size: int | None,
    single_writer: bool,
    tls_mode: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    idle_timeout: float | None,
    handshake_timeout: float,
    max_connections: int,
    max_queue_size: int,
    max_buf_size: int,
    workers: int,
    proxy: str | None,
    cache: str | None,
    bitmap: str | None,
    max_rate: int | None,
    auto_switch: bool,
    defer_fill: bool,
    inetd: bool,
    control: str | None,
    log_file: str | None,
    syslog: bool,
    pidfile: str | None,
    daemonize: bool,
    verbose: int,
) -> None:
    """Serve IMAGE (or the exports of --config, or a --proxy source) over NBD."""
    if proxy is not None:
        if image is not None or config is not None:
            raise click.UsageError("--proxy serves its source: give no IMAGE or --config")
        if cache is None or bitmap is None:
            raise click.UsageError("--proxy needs --cache FILE and --bitmap FILE")
        image = cache
        if not Path(cache).exists():
            Path(cache).touch()  # the proxy sizes it to the source
    elif cache or bitmap or max_rate or auto_switch or defer_fill:
        raise click.UsageError(
            "--cache, --bitmap, --max-rate, --auto-switch and --defer-fill need --proxy"
        )
    if (image is None) == (config is None):
        raise click.UsageError("give an IMAGE to serve, or --config FILE (not both)")
    try:
        if config is not None:
            exports, default = load_config(config)
        else:
            assert image is not None
            if not Path(image).exists():
                raise ServeError(
                    f"image {image} does not exist (create one: truncate -s 1G {image})"
                )
            export_name = name if name is not None else Path(image).name
            spec = ExportSpec(
                name=export_name,
                path=str(Path(image).resolve()),
                readonly=readonly,
                cow=cow or cow_persist is not None,
                cow_persist=cow_persist,
                description=description,
                allow=parse_allow(allow, "--allow"),
                size=size,
                proxy=proxy,
                bitmap=str(Path(bitmap).resolve()) if bitmap else None,
                max_rate=max_rate,
                auto_switch=auto_switch,
                defer_fill=defer_fill,
                single_writer=single_writer,
            )
            exports, default = [spec], export_name
    except _FAILURES as exc:
        raise click.ClickException(str(exc)) from None
    mode = TLSMode(tls_mode) if tls_mode else TLSMode.REQUIRE if tls_cert else TLSMode.OFF
    options = ServeOptions(
        exports=tuple(exports),
        default=default,
        config=config,
        bind=bind,
        port=port,
        unix=unix,
        control=None if inetd else Path(control) if control else default_control_path(),
        inetd=inetd,
        tls_mode=mode,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        workers=0 if inetd else workers,
        limits=ServerLimits(
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
            max_requests=max_queue_size,
            max_buffer=max_buf_size,
        ),
    )
    _daemon.setup_logging(verbose, log_file, syslog)
    names = ", ".join(spec.name for spec in exports)

    def announce(where: str) -> str:
        return f"ovis serve: serving {names} on {where}"

    _daemon.run_service(
        functools.partial(run, options),
        announce,
        daemon=daemonize,
        pid_path=pidfile,
        failures=_FAILURES,
        logger="ovis.serve",
    )
