"""The garbage collector, set for a long-running daemon.

What start-up builds (modules, pydantic schemas, the config, the app) lives as long as the process,
yet every full collection walked all of it again: in a storm of distinct alerts, each took about
28 ms with the event loop stopped, and those pauses were the webhook's p99 (34-44 ms against 12-16
ms without them; bench/webhook_storm). So start-up's objects are frozen out of every collection,
and young objects are collected after 20,000 new containers instead of 700 (reference counting
frees nearly all of them first; the cycles left wait a little longer, never unbounded).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Call once start-up is done, before the daemon takes traffic."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 20)
