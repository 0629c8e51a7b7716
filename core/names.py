"""The one set of rules for usernames and display names, wherever they come from."""

from __future__ import annotations

import re
import unicodedata

USERNAME_PATTERN = re.compile(r"[a-z0-9_.-]{3,32}")
DISPLAY_NAME_MAX = 64
# Characters that reorder or hide text (Trojan Source, CVE-2021-42574): the bidi embeddings,
# overrides and isolates, the directional marks, and the Arabic letter mark.
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def normalize(text: str) -> str:
    """NFKC: the form names are compared and stored in (fullwidth letters are plain ones)."""
    return unicodedata.normalize("NFKC", text)


def normalize_username(text: str) -> str:
    """A username as stored and compared: NFKC, lower case."""
    return normalize(text).lower()


def is_username(text: str) -> bool:
    """3-32 of a-z, 0-9, '_', '.', '-', the whole string (no trailing newline)."""
    return USERNAME_PATTERN.fullmatch(text) is not None


def _hidden(char: str) -> bool:
    return char in _BIDI or unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn")


def display_name_problem(text: str) -> str | None:
    """Why a display name typed by a person is refused, or None when it is fine."""
    name = normalize(text)
    if any(_hidden(c) for c in name):
        return "Control and text-direction characters are not allowed."
    if not name.strip():
        return "Must not be blank."
    if len(name) > DISPLAY_NAME_MAX:
        return f"At most {DISPLAY_NAME_MAX} characters."
    return None


def clean_display_name(text: str, fallback: str) -> str:
    """A display name from elsewhere (a login provider): the same rules, mended rather than
    refused; hidden characters dropped, whitespace collapsed, cut to the same limit."""
    name = " ".join("".join(c for c in normalize(text) if not _hidden(c)).split())
    return name[:DISPLAY_NAME_MAX].rstrip() or fallback
