"""`ovis serve`: export image files over NBD (nbd-server / xnbd-server / qemu-nbd)."""

from ._app import ServeApp, ServeError, ServeOptions, run
from ._config import ConfigError, load_config
from ._control import ControlError, control_request, default_control_path
from ._exports import ExportTable
from ._spec import ExportError, ExportSpec
from ._tls import TLSConfigError, client_context, server_context

__all__ = [
    "ConfigError",
    "ControlError",
    "ExportError",
    "ExportSpec",
    "ExportTable",
    "ServeApp",
    "ServeError",
    "ServeOptions",
    "TLSConfigError",
    "client_context",
    "control_request",
    "default_control_path",
    "load_config",
    "run",
    "server_context",
]
