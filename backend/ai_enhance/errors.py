"""The backend's exception class.  Every error carries a protocol error kind, a one-line message
and a fix-it hint; the user sees `message; hint`, the log gets the traceback."""
from __future__ import annotations

from ai_enhance_client.protocol import ErrorKind


class EnhanceError(Exception):
    def __init__(self, kind: ErrorKind, message: str, hint: str = ""):
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class Cancelled(EnhanceError):
    def __init__(self, message: str = "cancelled"):
        super().__init__(ErrorKind.CANCELLED, message)
