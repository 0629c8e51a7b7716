"""What is cheap on the database server in use: the one switch every workaround for the
embedded server (SecantusDB) reads. Nothing outside core.store reads it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """The limits and forms one server handles well; MongoDB gets the plain form. Figures
    from `make bench-embedded` (python -m bench.embedded_server), on SecantusDB."""

    name: str
    in_list_max: int  # the longest $in list sent in one query
    write_batch: int  # the most writes sent in one bulk command by background work
    paced_write_batch: int  # the same while the API is busy: each write, then a rest
    match_batch: int  # the most ids one query matches when each id stands for many documents
    find_and_modify: bool  # change-and-read in one findAndModify, else a write plus a read
    reports_disk: bool  # dbStats gives the disk's size and use (cheaply), else a folder does


MONGODB = ServerProfile(
    "mongodb",
    in_list_max=10_000,
    write_batch=1000,
    paced_write_batch=100,
    match_batch=1000,
    find_and_modify=True,
    reports_disk=True,
)
# SecantusDB matches $in by scanning the list for every document (2,000 ids at once: 44 s;
# in chunks of 100: 2.1 s). It runs one command at a time, so a drain's bulk write of 500
# summaries (~5 ms each on disk) held every API request for 2.5 s; 100 hold it ~0.5 s.
# findAndModify on an existing document takes ~85 ms against ~3.3 ms for update_one plus
# find_one. (A $unionWith that reads a movie and a rating in one trip scans the whole other
# collection: 168 ms with 10k movies, against 1.8 ms for two finds.) The list scan is paid per
# matched document too: histograms of 200 movies (30 ratings each) took 0.65 s in $in chunks
# of 100, 0.31 s one movie per query, 0.22 s in chunks of 10 (bench-embedded).
# Under a PUT load one bulk write of a hundred summaries queued every request for seconds;
# ten at a time with rests between keep the API's latency flat.
# Its dbStats counts and sizes every collection (a scan) and says nothing of the disk.
SECANTUSDB = ServerProfile(
    "secantusdb",
    in_list_max=100,
    write_batch=100,
    paced_write_batch=10,
    match_batch=10,
    find_and_modify=False,
    reports_disk=False,
)
_profile = SECANTUSDB  # the cautious default until connect() has asked the server


def server_profile() -> ServerProfile:
    """The profile of the server this process connected to."""
    return _profile


def use_profile(profile: ServerProfile) -> None:
    """Set the profile (connect() does; tests force one to cover both code paths)."""
    global _profile
    _profile = profile
