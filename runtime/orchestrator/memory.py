"""Returning freed memory to the OS after each step (SEED-SPEC §12).

CPython frees objects into glibc arenas that are not returned on their own; without `malloc_trim` a
long run's RSS ratchets up to the peak step even though nothing is live.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)


def release_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError) as exc:  # not glibc (musl, macOS): nothing to trim
        log.debug("malloc_trim unavailable: %s", exc)
