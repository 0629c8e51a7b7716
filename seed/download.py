"""Fetch MovieLens releases into a cache: resumable, checksummed, with a progress bar."""

from __future__ import annotations

import hashlib
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from core.services.movielens import ReleaseError

DATASETS = ("ml-latest-small", "ml-25m", "ml-32m")
_CHUNK = 1 << 16
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class DownloadError(ReleaseError):
    """The file could not be fetched or did not match its checksum."""


def dataset_url(name: str, base_url: str) -> str:
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return f"{base_url.rstrip('/')}/{name}.zip"


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def published_md5(url: str, *, timeout: float) -> str | None:
    """The checksum GroupLens publishes beside each zip (`<url>.md5`), if any."""
    try:
        with urllib.request.urlopen(f"{url}.md5", timeout=timeout) as resp:
            text = resp.read(4096).decode("ascii", "replace")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise DownloadError(f"checksum request failed: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"checksum request failed: {exc}") from exc
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    return match.group(0).lower() if match else None


def fetch(
    url: str,
    *,
    cache_dir: Path,
    require_checksum: bool = True,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download `url` into `cache_dir` (resuming a partial file) and verify its MD5."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError("only http and https URLs can be downloaded")
    name = _SAFE_NAME.sub("_", Path(urllib.parse.urlsplit(url).path).name) or "download.zip"
    cache_dir.mkdir(parents=True, exist_ok=True)
    target, part = cache_dir / name, cache_dir / f"{name}.part"
    expected = published_md5(url, timeout=timeout)
    if expected is None and require_checksum:
        raise DownloadError(f"no checksum published at {url}.md5")
    if target.exists() and (expected is None or _md5_of(target) == expected):
        return target
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            if offset and resp.status != 206:
                offset = 0  # the server ignored the range: start over
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            with (
                part.open("ab" if offset else "wb") as out,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    desc=name,
                    disable=not progress,
                ) as bar,
            ):
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the part file is already whole
            pass
        else:
            raise DownloadError(f"download failed: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        # The part file stays: the next attempt resumes where this one stopped.
        raise DownloadError(f"download interrupted: {exc}") from exc
    if expected is not None and (actual := _md5_of(part)) != expected:
        part.unlink()
        raise DownloadError(f"checksum mismatch for {name}: expected {expected}, got {actual}")
    shutil.move(part, target)
    return target
