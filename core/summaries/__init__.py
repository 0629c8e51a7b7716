"""Exact rating summaries, kept by draining durable recompute intents.

Intents: a PUT sets its rating's `changed_at` to the database server's clock in the same
write (`$currentDate`); a rating DELETE, a movie deletion and each import batch insert a
SummaryIntent before their write. So a crash at any instant leaves either no write, or a
write plus its intent. A drain round (`drain`) takes the rating writes from its mark up to
`settle` seconds before the server's present, and a bounded batch of intents, recomputes
every movie and user they name, and only then moves the mark and deletes those intents.
Writes are never cleared one by one: the mark moves past them, and a write landing meanwhile
carries a later time. `settle` covers writes whose time was taken just before the round
asked for the present but that became visible just after.

Ordering is per document (compare-and-set, `recompute`): a recomputation reads the
summary's `version`, then the published C and the ratings, and stores only over that same
version, setting a new one; a loser reads again. The weighted rewrite that follows a new C
(`global_mean`) goes through the same versions. So every stored summary was read after the
one it replaced, and one computed with an older C either loses its compare-and-set to the
rewrite or is stored before the rewrite reaches it.

Each movie summary records the C it was weighted with (`prior_mean`); C is published only
while no import is writing, from the movies' summaries (or by an import's last step, from
the ratings), and a refresh also rewrites any rated movie weighted with another C.
"""

from core.store.summaries import (
    MOVIES,
    USERS,
    Target,
    count,
    drained_before,
    move_mark,
    server_now,
)
from core.summaries.backlog import drain_lag, undrained
from core.summaries.drain import (
    IMPORT_TAG_QUIET,
    DrainReport,
    drain,
    drain_once,
    finish_import,
    recompute_many,
)
from core.summaries.global_mean import (
    import_writing,
    published_mean,
    refresh_weighted_scores,
    weighted_score,
)
from core.summaries.intents import (
    Orphans,
    heal_orphans,
    orphans,
    purge_ratings,
    purge_user_ratings,
    record_intent,
    withdraw_intent,
)
from core.summaries.pace import Pace
from core.summaries.recompute import Recomputed, recompute, recompute_movies, recompute_users
from core.summaries.verify import Difference, ids_of, verify

__all__ = [
    "IMPORT_TAG_QUIET",
    "MOVIES",
    "USERS",
    "Difference",
    "DrainReport",
    "Orphans",
    "Pace",
    "Recomputed",
    "Target",
    "count",
    "drain",
    "drain_lag",
    "drain_once",
    "drained_before",
    "finish_import",
    "heal_orphans",
    "ids_of",
    "import_writing",
    "move_mark",
    "orphans",
    "published_mean",
    "purge_ratings",
    "purge_user_ratings",
    "recompute",
    "recompute_many",
    "recompute_movies",
    "recompute_users",
    "record_intent",
    "refresh_weighted_scores",
    "server_now",
    "undrained",
    "verify",
    "weighted_score",
    "withdraw_intent",
]
