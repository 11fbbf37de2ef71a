"""Logging helpers: `nested(step)` logs a step's start, end and duration (test-driver style)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

logger = logging.getLogger("kmod_audit")


@contextlib.contextmanager
def nested(step: str) -> Iterator[None]:
    """Log `step` on entry and its duration on exit (also when it raises)."""
    logger.info("%s", step)
    start = time.monotonic()
    try:
        yield
    finally:
        logger.info("%s: done in %.2f s", step, time.monotonic() - start)
