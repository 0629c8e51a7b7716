"""MovieLens files from a directory or a .zip, read as streams (never loaded whole)."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from core.imports.writer import ReleaseError

REQUIRED = ("movies.csv", "links.csv", "ratings.csv")
OPTIONAL = ("tags.csv",)
_CHUNK = 1 << 20


class SourceError(ReleaseError):
    """The dataset cannot be read at all (missing or unreadable file): the import fails."""


class Source:
    """A MovieLens release: a folder holding the CSV files, or a zip of one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] = {}
        if not path.exists():
            raise SourceError(f"{path} does not exist")
        if path.is_dir():
            self._members = {p.name: str(p) for p in path.iterdir() if p.suffix == ".csv"}
        elif zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            for name in self._zip.namelist():
                base = name.rsplit("/", 1)[-1]
                # ml-*.zip hold one top-level folder; a flat zip works too. First match wins.
                if base.endswith(".csv") and name.count("/") <= 1:
                    self._members.setdefault(base, name)
        else:
            raise SourceError(f"{path} is neither a folder nor a zip file")
        missing = [name for name in REQUIRED if name not in self._members]
        if missing:
            raise SourceError(f"{path} lacks {', '.join(missing)}")

    def has(self, name: str) -> bool:
        return name in self._members

    @contextmanager
    def _binary(self, name: str) -> Iterator[IO[bytes]]:
        try:
            if self._zip is not None:
                with self._zip.open(self._members[name]) as stream:
                    yield stream
            else:
                with open(self._members[name], "rb") as stream:
                    yield stream
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise SourceError(f"cannot read {name}: {exc}") from exc

    def count_rows(self, name: str) -> int:
        """Data rows in a file (lines minus the header), counted in one streaming pass."""
        lines, last = 0, b"\n"
        with self._binary(name) as stream:
            while chunk := stream.read(_CHUNK):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        if last != b"\n":
            lines += 1
        return max(lines - 1, 0)

    @contextmanager
    def rows(self, name: str) -> Iterator[Iterator[tuple[int, list[str] | None, str]]]:
        """(line number, fields or None, why not) for each data row, after the header."""
        with self._binary(name) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
            reader = csv.reader(text)

            def iterate() -> Iterator[tuple[int, list[str] | None, str]]:
                try:
                    next(reader, None)
                    while True:
                        try:
                            fields = next(reader)
                        except StopIteration:
                            return
                        except csv.Error as exc:  # one broken row, not a broken file
                            yield reader.line_num, None, f"unparseable CSV: {exc}"
                            continue
                        yield reader.line_num, fields, ""
                except UnicodeDecodeError as exc:
                    raise SourceError(
                        f"{name} is not UTF-8 near line {reader.line_num + 1}"
                    ) from exc

            yield iterate()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
