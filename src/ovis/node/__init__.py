"""The ovis node: a library's volumes over NBD, managed through a JSON HTTP API.

`run(NodeOptions(...), on_ready)` is what `ovis node start` calls;
`VolumeExports` is the NBD backend (one shared open volume per name) and
`make_api` the aiohttp application, both usable on their own in tests.
"""

from ._api import make_api
from ._app import NodeAddresses, NodeApp, NodeOptions, run
from ._exports import NodeError, VolumeExports

__all__ = [
    "NodeAddresses",
    "NodeApp",
    "NodeError",
    "NodeOptions",
    "VolumeExports",
    "make_api",
    "run",
]
