"""The `ovis` command line: a thin layer that builds configs and calls the library."""

from __future__ import annotations

import click

from ._cluster import cluster
from ._export import export
from ._migrate import migrate
from ._node import node
from ._serve import serve
from ._vdi import vdi


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ovis")
def main() -> None:
    """ovis: block storage for virtual machines over NBD."""


main.add_command(serve)
main.add_command(export)
main.add_command(migrate)
main.add_command(node)
main.add_command(vdi)
main.add_command(cluster)

__all__ = ["main"]
