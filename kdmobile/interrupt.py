"""SIGTERM as Ctrl-C: long commands clean up (temporary folders, worker processes) when a CI timeout kills them.

with sigterm_as_interrupt():      # kdmobile export / kdmobile bench wrap their work in this
    ...                           # SIGTERM now raises KeyboardInterrupt here, so `finally` blocks run
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises ``KeyboardInterrupt`` (the CLI exits 130); the previous handler is
    restored after. Outside the main thread (where handlers cannot be set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
