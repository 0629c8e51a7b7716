"""Small MovieLens-format releases written by the tests themselves (broken ones included)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

MOVIES = [
    (1, "Toy Story (1995)", "Adventure|Animation|Children|Comedy|Fantasy"),
    (2, '"Good, the Bad and the Ugly, The (1966)"', "Action|Western"),
    (3, "Cosmos", "(no genres listed)"),
    (4, "Heat (1995)", "Action|Crime|Thriller"),
]
LINKS = [(1, "0114709", "862"), (2, "0060196", "429"), (3, "", ""), (4, "0113277", "949")]
RATINGS = [
    (1, 1, "4.0", 964982703),
    (1, 2, "5.0", 964982931),
    (1, 4, "3.5", 964982400),
    (2, 1, "3.0", 1445714994),
    (2, 4, "0.5", 1445715000),
    (3, 1, "5.0", 1306463578),
]
TAGS = [(2, 1, "pixar", 1445714994), (3, 4, "pacino", 1445714995)]


def write_release(
    folder: Path,
    *,
    movies: list = MOVIES,
    links: list = LINKS,
    ratings: list = RATINGS,
    tags: list | None = TAGS,
    extra_lines: dict[str, list[str]] | None = None,
) -> Path:
    """Write the CSV files; `extra_lines` appends raw (possibly broken) lines to a file."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "movies.csv": (["movieId", "title", "genres"], movies),
        "links.csv": (["movieId", "imdbId", "tmdbId"], links),
        "ratings.csv": (["userId", "movieId", "rating", "timestamp"], ratings),
    }
    if tags is not None:
        files["tags.csv"] = (["userId", "movieId", "tag", "timestamp"], tags)
    for name, (header, rows) in files.items():
        with (folder / name).open("w", newline="", encoding="utf-8") as f:
            f.write(",".join(header) + "\n")
            for row in rows:
                # titles in MOVIES are written already quoted, as MovieLens does
                f.write(",".join(str(v) for v in row) + "\n")
            for line in (extra_lines or {}).get(name, []):
                f.write(line + "\n")
    return folder


def zip_release(folder: Path, target: Path, *, top: str = "ml-test") -> Path:
    """Zip a release the way GroupLens does: one top-level folder."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.glob("*.csv")):
            zf.write(path, f"{top}/{path.name}")
    return target


def read_ratings(folder: Path) -> list[list[str]]:
    with (folder / "ratings.csv").open(encoding="utf-8") as f:
        return list(csv.reader(f))[1:]
