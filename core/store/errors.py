"""What a database failure means to the rest of the system: storage trouble (a 503 with
Retry-After) or a collision on a unique index (a domain conflict)."""

from __future__ import annotations

from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

# Every error the driver raises; callers outside the store catch it by this name.
StoreError = PyMongoError

# Seconds a client is asked to wait after a 503 caused by the database.
RETRY_AFTER = 5

# Server answers that say the database cannot serve now, not that the request was wrong.
STORAGE_TROUBLE_CODES = frozenset(
    {
        1,  # InternalError: what SecantusDB answers once its storage engine has panicked
        6, 7, 89, 9001,  # HostUnreachable, HostNotFound, NetworkTimeout, SocketException
        50, 262,  # MaxTimeMSExpired, ExceededTimeLimit
        64, 100,  # WriteConcernFailed, UnsatisfiableWriteConcern
        91, 189, 10107, 11600, 11602, 13435, 13436,  # shutting down, stepped down, not primary
        112,  # WriteConflict
        14031,  # OutOfDiskSpace
    }
)  # fmt: skip


def unavailable(exc: PyMongoError) -> bool:
    """Storage trouble, not a bad query: the database was unreachable, ran out of time, or
    could not write (a full disk, a panicked storage engine, no primary). A 503 with
    Retry-After, never a 500."""
    if isinstance(exc, ConnectionFailure | WriteConcernError) or exc.timeout:
        return True
    if exc.has_error_label("RetryableWriteError") or exc.has_error_label(
        "TransientTransactionError"
    ):
        return True
    if isinstance(exc, BulkWriteError):
        details = exc.details or {}
        if details.get("writeConcernErrors"):
            return True
        codes = {e.get("code") for e in details.get("writeErrors", [])}
        return bool(codes & STORAGE_TROUBLE_CODES)
    return isinstance(exc, OperationFailure) and exc.code in STORAGE_TROUBLE_CODES


class Duplicate(Exception):
    """A write collided with a unique index; `field` is the index's first field."""

    def __init__(self, field: str | None) -> None:
        super().__init__(field)
        self.field = field


def duplicate(exc: DuplicateKeyError) -> Duplicate:
    """The collision as a Duplicate naming the first field of the index (its keyPattern)."""
    pattern = (exc.details or {}).get("keyPattern") or {}
    return Duplicate(next(iter(pattern), None))
