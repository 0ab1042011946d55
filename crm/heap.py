"""The cyclic garbage collector and long-running processes.

A full collection walks every object the collector tracks. A web process holds ~175,000 of
them after start-up (modules, the app, its templates, SQLAlchemy's mappers and caches), and
walking them took 100-140 ms, once every ~65 requests of the conversation list: the slowest
requests of every run (bench/inbox.py, even with one agent). Those objects live as long as the
process, so they are moved out of the collector's sight once, when the process is ready:
later collections only walk what was allocated since (5-10 ms).
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect what start-up left behind, then freeze the rest; returns how many are frozen.

    Frozen objects are still freed by reference counting; only a cycle among them would never
    be collected, and start-up objects stay in use anyway. Call it once per process, when it is
    ready to serve (before forking helps too: children inherit the frozen set).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
