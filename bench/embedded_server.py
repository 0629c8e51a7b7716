"""What the SecantusDB workarounds buy: each portable form next to the plain one, timed side by
side on one fresh SecantusDB server (`make bench-embedded`).

Measured: a long `$in` sent whole or in chunks of 100; findAndModify against update_one plus
a read; a movie and a rating read as two finds or in one trip (`$lookup`, `$unionWith`:
both scan the other collection here); a conditional summary update with and without the
`<field>_guard` index; the global mean from the ratings against from the movies' summaries.
Each row prints both timings and their ratio; `explain` shows which plan the server chose.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, MongoClient, ReturnDocument

from core import processes
from core.store import SECANTUSDB, chunked
from embedded import stack


def timed(work: Callable[[], Any], *, repeat: int) -> float:
    """Median seconds of `repeat` runs."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def plan_of(explained: dict[str, Any]) -> str:
    """The winning plan's stages, outermost first (e.g. FETCH < IXSCAN rating_guard)."""
    stage = explained.get("queryPlanner", {}).get("winningPlan", {})
    names = []
    while stage:
        name = stage.get("stage", "?")
        if stage.get("indexName"):
            name += f" {stage['indexName']}"
        names.append(name)
        stage = stage.get("inputStage") or {}
    return " < ".join(names) or "?"


def seed(db: Any, *, movies: int, ratings: int) -> tuple[list[ObjectId], list[ObjectId]]:
    movie_ids = [ObjectId() for _ in range(movies)]
    db.movies.insert_many(
        [{"_id": m, "rating": {"ticket": 0, "count": 0, "sum": 0.0}} for m in movie_ids]
    )
    db.movies.create_index([("_id", ASCENDING), ("rating.ticket", ASCENDING)], name="rating_guard")
    user_ids = [ObjectId() for _ in range(max(1, ratings // 50))]
    rng = random.Random(7)
    docs: list[dict[str, Any]] = [
        {
            "movie_id": rng.choice(movie_ids),
            "user_id": user_ids[i % len(user_ids)],
            "score": rng.randint(1, 10) / 2,
        }
        for i in range(ratings)
    ]
    db.ratings.insert_many(docs)
    db.ratings.create_index([("movie_id", ASCENDING)], name="movie_id")
    db.movies.update_many({}, [{"$set": {"rating.sum": 3.5, "rating.count": 1}}])
    return movie_ids, [d["_id"] for d in docs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.embedded_server")
    parser.add_argument("--movies", type=int, default=5000)
    parser.add_argument("--ratings", type=int, default=20000)
    parser.add_argument("--in-ids", type=int, default=2000)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        port = processes.free_port()
        server = stack.start_secantus(
            storage=str(Path(tmp) / "db"), port=port, log_file=Path(tmp) / "db.log"
        )
        try:
            client: MongoClient = MongoClient(f"mongodb://127.0.0.1:{port}")
            db = client.bench
            started = time.perf_counter()
            movie_ids, _ = seed(db, movies=args.movies, ratings=args.ratings)
            print(
                f"SecantusDB, {args.movies:,} movies and {args.ratings:,} ratings "
                f"(loaded in {time.perf_counter() - started:.1f} s)\n"
            )
            rows: list[tuple[str, str, float, str, float]] = []

            wanted = movie_ids[: args.in_ids]
            whole = timed(
                lambda: list(db.ratings.find({"movie_id": {"$in": wanted}}, {"_id": 1})),
                repeat=3,
            )
            parts = timed(
                lambda: [
                    list(db.ratings.find({"movie_id": {"$in": part}}, {"_id": 1}))
                    for part in chunked(wanted, SECANTUSDB.in_list_max)
                ],
                repeat=3,
            )
            rows.append(
                (
                    f"$in of {len(wanted):,} ids",
                    "whole",
                    whole,
                    f"chunks of {SECANTUSDB.in_list_max}",
                    parts,
                )
            )

            target = movie_ids[0]
            counter = iter(range(1, 10**9))
            fam = timed(
                lambda: db.movies.find_one_and_update(
                    {"_id": target},
                    {"$set": {"rating.count": next(counter)}},
                    return_document=ReturnDocument.AFTER,
                ),
                repeat=15,
            )

            def update_then_read() -> None:
                db.movies.update_one({"_id": target}, {"$set": {"rating.count": next(counter)}})
                db.movies.find_one({"_id": target})

            two = timed(update_then_read, repeat=15)
            rows.append(("change one document, read it", "findAndModify", fam, "update+find", two))

            # The PUT's first round trip: does the movie exist, and the caller's rating.
            db.ratings.create_index([("user_id", ASCENDING), ("movie_id", ASCENDING)])
            rated: dict[str, Any] = db.ratings.find_one({"movie_id": target}) or {}
            rated = rated or db.ratings.find_one({}) or {}
            pair = {"user_id": rated["user_id"], "movie_id": rated["movie_id"]}
            movie_only = [{"$match": {"_id": rated["movie_id"]}}, {"$project": {"_id": 1}}]
            union = timed(
                lambda: list(
                    db.ratings.aggregate(
                        [
                            {"$match": pair},
                            {"$unionWith": {"coll": "movies", "pipeline": movie_only}},
                        ]
                    )
                ),
                repeat=15,
            )
            two_finds = timed(
                lambda: (db.movies.find_one({"_id": rated["movie_id"]}), db.ratings.find_one(pair)),
                repeat=15,
            )
            lookup = timed(
                lambda: list(
                    db.movies.aggregate(
                        [
                            *movie_only,
                            {
                                "$lookup": {
                                    "from": "ratings",
                                    "pipeline": [{"$match": pair}],
                                    "as": "r",
                                }
                            },
                        ]
                    )
                ),
                repeat=5,
            )
            rows.append(("movie + own rating", "2 finds (2 trips)", two_finds, "$unionWith", union))
            rows.append(("movie + own rating, 1 trip", "$lookup", lookup, "$unionWith", union))

            tickets = iter(range(1, 10**9))

            def guarded_update() -> None:
                ticket = next(tickets)
                movie = random.choice(movie_ids)
                db.movies.update_one(
                    {"_id": movie, "rating.ticket": {"$lt": ticket}},
                    {"$set": {"rating.ticket": ticket}},
                )

            with_guard = timed(guarded_update, repeat=30)
            guard_plan = plan_of(
                db.command(
                    "explain",
                    {"find": "movies", "filter": {"_id": target, "rating.ticket": {"$lt": 5}}},
                )
            )
            db.movies.drop_index("rating_guard")
            without = timed(guarded_update, repeat=30)
            bare_plan = plan_of(
                db.command(
                    "explain",
                    {"find": "movies", "filter": {"_id": target, "rating.ticket": {"$lt": 5}}},
                )
            )
            rows.append(
                ("summary update if newer", "no guard index", without, "guard index", with_guard)
            )

            from_ratings = timed(
                lambda: list(
                    db.ratings.aggregate(
                        [{"$group": {"_id": None, "s": {"$sum": "$score"}, "n": {"$sum": 1}}}]
                    )
                ),
                repeat=3,
            )
            from_movies = timed(
                lambda: list(
                    db.movies.aggregate(
                        [
                            {
                                "$group": {
                                    "_id": None,
                                    "s": {"$sum": "$rating.sum"},
                                    "n": {"$sum": "$rating.count"},
                                }
                            }
                        ]
                    )
                ),
                repeat=3,
            )
            rows.append(
                ("global mean C", "from ratings", from_ratings, "from summaries", from_movies)
            )

            print(f"{'operation':<30} {'plain':>16} {'ms':>9}  {'workaround':>16} {'ms':>9}  ratio")
            for what, plain, plain_s, alt, alt_s in rows:
                print(
                    f"{what:<30} {plain:>16} {plain_s * 1000:>9.1f}  {alt:>16} {alt_s * 1000:>9.1f}"
                    f"  {plain_s / alt_s:>5.1f}x"
                )
            print(f"\nplans: guard index: {guard_plan}; without it: {bare_plan}")
            client.close()
        finally:
            processes.stop([server])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
