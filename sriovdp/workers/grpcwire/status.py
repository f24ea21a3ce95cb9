"""gRPC status codes and the error that carries one (plugin worker process, any thread).

The numbers are the wire values of ``grpc-status`` (grpc/doc/statuscodes.md).
"""

from __future__ import annotations

import enum


class StatusCode(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def from_wire(cls, value: str | bytes) -> StatusCode:
        """The code of a ``grpc-status`` value; a value that is no known code is UNKNOWN (as in
        grpc: a peer may be newer than us, and garbage is no reason to crash)."""
        try:
            return cls(int(value))
        except ValueError:
            return cls.UNKNOWN


class RpcError(Exception):
    """An RPC that ended with a status other than OK: ``code`` and human ``details``."""

    def __init__(self, code: StatusCode, details: str = "") -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}" if self.details else self.code.name
