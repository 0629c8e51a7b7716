"""The store: the only code that talks to MongoDB. One module per collection owns its
queries, projections and indexes and returns typed shapes; every rule of a particular server
(SecantusDB's costs, see `profile`) is decided here and nowhere else."""

from core.store.client import (
    DURABLE,
    Client,
    bind,
    blocking_client,
    close,
    connect,
    db_calls_var,
)
from core.store.errors import RETRY_AFTER, Duplicate, StoreError, unavailable
from core.store.paging import ASC, DESC, Page, Position, Sort, chunked, keyset_page, paged
from core.store.profile import MONGODB, SECANTUSDB, ServerProfile, server_profile, use_profile

__all__ = [
    "ASC",
    "DESC",
    "DURABLE",
    "MONGODB",
    "RETRY_AFTER",
    "SECANTUSDB",
    "Client",
    "Duplicate",
    "Page",
    "Position",
    "ServerProfile",
    "Sort",
    "StoreError",
    "bind",
    "blocking_client",
    "chunked",
    "close",
    "connect",
    "db_calls_var",
    "keyset_page",
    "paged",
    "server_profile",
    "unavailable",
    "use_profile",
]
