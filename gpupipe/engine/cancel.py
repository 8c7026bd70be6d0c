"""Cooperative cancellation shared by every stage, the CLI and API callers."""

from __future__ import annotations

import threading


class CancelToken:
    """Set once; every stage checks it before taking new work.

    ``reason`` says why the run stopped ("interrupted", or a system failure's
    message) so the summary can tell the user.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)
