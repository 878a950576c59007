"""The one base of canvas-stream's own exceptions.

Why: ``except CanvasStreamError`` tells a condition the code raised on purpose (a refused token, a
broker that did not answer, an unusable key file) from a bug. Each subclass keeps the builtin base
it had before (``ValueError``, ``RuntimeError``), so existing ``except`` clauses still match.
"""

from __future__ import annotations

__all__ = ["CanvasStreamError", "Refused"]


class CanvasStreamError(Exception):
    """Base of every exception canvas-stream defines."""


class Refused(CanvasStreamError):
    """Input refused for a reason the sender may see: ``reason`` is short and carries no secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
