"""A job that runs on its own thread, at most one at a time.

The heartbeat and the Alertmanager push must never delay an evaluation cycle:
each runs in the background, and while one is still under way the next is
skipped rather than queued (the next cycle sends fresh news anyway).
"""

import threading
from collections.abc import Callable


class OneAtATime:
    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None

    def run(self, job: Callable[[], None]) -> bool:
        """Start ``job`` on a thread; False (and nothing started) while one still runs."""
        if self._thread is not None and self._thread.is_alive():
            return False
        self._thread = threading.Thread(target=job, name=self._name, daemon=True)
        self._thread.start()
        return True

    def wait(self, timeout: float) -> None:
        """Let a job under way finish (for shutdown and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)
