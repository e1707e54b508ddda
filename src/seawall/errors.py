"""The one error hierarchy of Seawall.

Rules:
- Every error we raise on purpose is a ``SeawallError``; anything else is a bug.
- Each class says whose fault it is (``fault``: "local" for us/our host, "remote" for a
  peer, "user" for bad input) and maps to exactly one HTTP status and one CLI exit code.
  The mapping lives here and nowhere else: the API handler and the CLI main read it.
"""

from __future__ import annotations


class SeawallError(Exception):
    """Base class. ``http_status`` and ``exit_code`` are read by the API and CLI shells."""

    http_status = 500
    exit_code = 1
    fault = "local"
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        """The error as every API answers it (JSON), and ``error_from_code`` reads it."""
        return {"code": self.code, "message": self.message, "fault": self.fault}


class InvalidInput(SeawallError):
    """The caller asked for something malformed or out of range."""

    http_status = 400
    exit_code = 2
    fault = "user"
    code = "invalid_input"


class NotFound(SeawallError):
    http_status = 404
    exit_code = 3
    fault = "user"
    code = "not_found"


class Conflict(SeawallError):
    """The request is valid but the current state forbids it (already exists, busy...)."""

    http_status = 409
    exit_code = 4
    fault = "user"
    code = "conflict"


class NotReady(SeawallError):
    """What was asked for does not exist *yet* (e.g. a checkpoint not replicated)."""

    http_status = 409
    exit_code = 5
    fault = "user"
    code = "not_ready"


class Unauthorized(SeawallError):
    http_status = 401
    exit_code = 6
    fault = "user"
    code = "unauthorized"


class Forbidden(SeawallError):
    """The caller is authenticated, but their role may not do this."""

    http_status = 403
    exit_code = 6
    fault = "user"
    code = "forbidden"


class RequestTooLarge(SeawallError):
    """A request's body is over the limit of its route: refused before it is read."""

    http_status = 413
    exit_code = 2
    fault = "user"
    code = "too_large"


class RequestTimeout(SeawallError):
    """A client sent its request too slowly: it was cut off, not waited for."""

    http_status = 408
    exit_code = 7
    fault = "remote"
    code = "request_timeout"


class RateLimited(SeawallError):
    """Too many attempts (wrong passwords): retry after ``retry_after_s`` seconds."""

    http_status = 429
    exit_code = 6
    fault = "user"
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PeerError(SeawallError):
    """A peer (agent or site manager) failed or could not be reached."""

    http_status = 502
    exit_code = 7
    fault = "remote"
    code = "peer_error"


class ProtocolViolation(SeawallError):
    """Bytes from a peer broke a protocol rule (bad magic, checksum, sequence...)."""

    http_status = 502
    exit_code = 7
    fault = "remote"
    code = "protocol_violation"


class CorruptData(SeawallError):
    """Stored data failed its checksum."""

    http_status = 500
    exit_code = 8
    fault = "local"
    code = "corrupt_data"


class JournalFull(SeawallError):
    """The journal's filesystem is out of space: nothing was stored; retry once there is room."""

    http_status = 507
    exit_code = 9
    fault = "local"
    code = "journal_full"


class DatabaseFull(SeawallError):
    """The manager's database is out of space: nothing was changed; retry once there is room."""

    http_status = 507
    exit_code = 9
    fault = "local"
    code = "database_full"


class Unavailable(SeawallError):
    """A service of this host that we depend on (the hypervisor: libvirtd, QEMU's QMP
    socket) does not answer; retry once it runs."""

    http_status = 503
    exit_code = 10
    fault = "local"
    code = "unavailable"


ERROR_CLASSES: dict[str, type[SeawallError]] = {
    cls.code: cls
    for cls in (
        SeawallError,
        InvalidInput,
        NotFound,
        Conflict,
        NotReady,
        Unauthorized,
        Forbidden,
        RequestTooLarge,
        RequestTimeout,
        RateLimited,
        PeerError,
        ProtocolViolation,
        CorruptData,
        JournalFull,
        DatabaseFull,
        Unavailable,
    )
}


def error_from_code(code: str, message: str) -> SeawallError:
    """Rebuild an error received over HTTP as the same class (unknown codes: PeerError)."""
    return ERROR_CLASSES.get(code, PeerError)(message)
