"""Fetch MovieLens releases into a cache: resumable, checksummed, with a progress bar."""

from __future__ import annotations

import hashlib
import re
import shutil
import urllib.parse
from pathlib import Path

from tqdm import tqdm

from core.imports.writer import ReleaseError
from core.outbound import OutboundFailed, OutboundRefused, UrlPolicy, open_url, read_capped

# An operator's own command line: any host, any address, any size.
OPERATOR = UrlPolicy(hosts=None, allow_private=True)

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


def published_md5(url: str, *, timeout: float, policy: UrlPolicy = OPERATOR) -> str | None:
    """The checksum GroupLens publishes beside each zip (`<url>.md5`), if any."""
    try:
        resp = open_url(f"{url}.md5", policy, timeout=timeout)
        try:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise DownloadError(f"checksum request failed: HTTP {resp.status}")
            text = resp.read(4096).decode("ascii", "replace")
        finally:
            resp.close()
    except (OutboundFailed, OutboundRefused) as exc:
        raise DownloadError(f"checksum request failed: {exc}") from None
    except OSError:
        raise DownloadError("checksum request failed") from None
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    return match.group(0).lower() if match else None


def fetch(
    url: str,
    *,
    cache_dir: Path,
    require_checksum: bool = True,
    progress: bool = True,
    timeout: float = 30.0,
    policy: UrlPolicy = OPERATOR,
) -> Path:
    """Download `url` into `cache_dir` (resuming a partial file) and verify its MD5; every
    hop, address and byte under `policy`. Errors name at most an HTTP status."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError("only http and https URLs can be downloaded")
    name = _SAFE_NAME.sub("_", Path(urllib.parse.urlsplit(url).path).name) or "download.zip"
    cache_dir.mkdir(parents=True, exist_ok=True)
    target, part = cache_dir / name, cache_dir / f"{name}.part"
    expected = published_md5(url, timeout=timeout, policy=policy)
    if expected is None and require_checksum:
        raise DownloadError(f"no checksum published at {url}.md5")
    if target.exists() and (expected is None or _md5_of(target) == expected):
        return target
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        resp = open_url(url, policy, headers=headers, timeout=timeout)
    except (OutboundFailed, OutboundRefused) as exc:
        raise DownloadError(str(exc)) from None
    try:
        if resp.status == 416 and offset:
            pass  # the part file is already whole
        elif resp.status not in (200, 206):
            raise DownloadError(f"download failed: HTTP {resp.status}")
        else:
            if offset and resp.status != 206:
                offset = 0  # the server ignored the range: start over
            length = resp.getheader("Content-Length")
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
                for chunk in read_capped(resp, policy, _CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OutboundRefused as exc:
        part.unlink(missing_ok=True)  # over the cap: nothing worth resuming
        raise DownloadError(str(exc)) from None
    except (OutboundFailed, OSError) as exc:
        # The part file stays: the next attempt resumes where this one stopped.
        raise DownloadError(
            str(exc) if isinstance(exc, OutboundFailed) else "download failed"
        ) from None
    finally:
        resp.close()
    if expected is not None and (actual := _md5_of(part)) != expected:
        part.unlink()
        raise DownloadError(f"checksum mismatch for {name}: expected {expected}, got {actual}")
    shutil.move(part, target)
    return target
