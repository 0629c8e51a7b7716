"""Reading releases from folders and zips."""

from __future__ import annotations

import pytest

from core.imports.source import Source, SourceError
from tests.seed.releases import write_release, zip_release


def test_folder_and_zip_read_the_same_rows(tmp_path):
    folder = write_release(tmp_path / "rel")
    archive = zip_release(folder, tmp_path / "rel.zip")
    for path in (folder, archive):
        source = Source(path)
        try:
            assert source.count_rows("ratings.csv") == 6
            assert source.has("tags.csv")
            with source.rows("movies.csv") as rows:
                parsed = [(line, fields) for line, fields, _ in rows]
        finally:
            source.close()
        assert parsed[1] == (3, ["2", "Good, the Bad and the Ugly, The (1966)", "Action|Western"])


def test_missing_required_file_and_wrong_kind(tmp_path):
    folder = write_release(tmp_path / "rel")
    (folder / "links.csv").unlink()
    with pytest.raises(SourceError, match=r"links\.csv"):
        Source(folder)
    with pytest.raises(SourceError, match="does not exist"):
        Source(tmp_path / "nope")
    (tmp_path / "junk.zip").write_text("not a zip")
    with pytest.raises(SourceError, match="neither"):
        Source(tmp_path / "junk.zip")


def test_non_utf8_file_is_unreadable(tmp_path):
    folder = write_release(tmp_path / "rel")
    (folder / "movies.csv").write_bytes(b"movieId,title,genres\n1,Caf\xe9 (1990),Drama\n")
    source = Source(folder)
    with pytest.raises(SourceError, match="UTF-8"), source.rows("movies.csv") as rows:
        list(rows)


def test_rows_without_trailing_newline_are_counted(tmp_path):
    folder = write_release(tmp_path / "rel")
    (folder / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862")
    assert Source(folder).count_rows("links.csv") == 1
