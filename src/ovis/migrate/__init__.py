"""Live storage migration: post-copy proxy (xnbd) and pre-copy mirror (qemu).

- `ProxyFilter` serves a disk whose blocks still live on a remote source,
  fetching on demand into a local cache and filling in the background, with
  a `PersistentBitmap` of cached blocks; `switch()` then drops the source.
  `open_proxy(uri, cache, bitmap)` builds one; `reconnect_proxy(proxy, uri)`
  gives it a new source connection after the old one failed.
- `MirrorFilter` sits above an export's device; a `MirrorJob` copies the
  device to a destination in dirty-bitmap passes, pauses writes briefly for
  the last blocks, and mirrors writes until `finish()`.  `start_mirror`
  starts one against an NBD URI.
"""

from ovis.migrate._bitmap import Bitmap, PersistentBitmap
from ovis.migrate._copy import Copied, copy_range
from ovis.migrate._errors import MigrationError
from ovis.migrate._mirror import MirrorJob, MirrorState, MirrorStats, PassStats
from ovis.migrate._mirror_filter import MirrorFilter
from ovis.migrate._open import open_proxy, reconnect_proxy, start_mirror
from ovis.migrate._proxy import ProxyFilter, ProxyProgress
from ovis.migrate._rate import RateLimiter

__all__ = [
    "Bitmap",
    "Copied",
    "MigrationError",
    "MirrorFilter",
    "MirrorJob",
    "MirrorState",
    "MirrorStats",
    "PassStats",
    "PersistentBitmap",
    "ProxyFilter",
    "ProxyProgress",
    "RateLimiter",
    "copy_range",
    "open_proxy",
    "reconnect_proxy",
    "start_mirror",
]
