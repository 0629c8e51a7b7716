"""The one set of rules for usernames, display names, email addresses and passwords,
wherever they come from (the API's schemas, the operator commands, the services)."""

from __future__ import annotations

import re
import unicodedata

USERNAME_PATTERN = re.compile(r"[a-z0-9_.-]{3,32}")
# The importer's namespace: MovieLens user N is "movielens-N"; nobody else may take one.
_IMPORTED = re.compile(r"movielens-\d+")
DISPLAY_NAME_MAX = 64
EMAIL_MAX = 254  # RFC 5321's limit on a path
# Lengths a password may have: long enough to resist guessing, short enough to hash cheaply.
PASSWORD_MIN = 10
PASSWORD_MAX = 256
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
# Characters that reorder or hide text (Trojan Source, CVE-2021-42574): the bidi embeddings,
# overrides and isolates, the directional marks, and the Arabic letter mark.
_BIDI = "\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c"
_CONTROL = "\u0000-\u001f\u007f-\u009f"
_HIDDEN = re.compile(f"[{_CONTROL}{_BIDI}\ud800-\udfff]")
# The same rule as a JSON Schema pattern, for the OpenAPI document: no hidden character, and
# at least one that is not a space.
DISPLAY_NAME_PATTERN = f"^[^{_CONTROL}{_BIDI}]*[^\\s{_CONTROL}{_BIDI}][^{_CONTROL}{_BIDI}]*$"


def normalize(text: str) -> str:
    """NFKC: the form names are compared and stored in (fullwidth letters are plain ones)."""
    return unicodedata.normalize("NFKC", text)


def normalize_username(text: str) -> str:
    """A username as stored and compared: NFKC (fullwidth letters are plain ones)."""
    return normalize(text)


def imported_username(movielens_id: int) -> str:
    """The username an import gives MovieLens user `movielens_id`."""
    return f"movielens-{movielens_id}"


def is_reserved(username: str) -> bool:
    """Whether a username belongs to the importer's namespace."""
    return _IMPORTED.fullmatch(username) is not None


def is_username(text: str) -> bool:
    """3-32 of a-z, 0-9, '_', '.', '-', the whole string (no trailing newline)."""
    return USERNAME_PATTERN.fullmatch(text) is not None


def username_problem(text: str) -> str | None:
    """Why a (normalised) username is refused, or None."""
    if not is_username(text):
        return "3-32 of a-z, 0-9, '_', '.', '-'."
    if is_reserved(text):
        return "Names movielens-<number> are kept for imported users."
    return None


def email_problem(text: str) -> str | None:
    """Why an email address is refused, or None (the shape only: the address is not
    contacted)."""
    if len(text) > EMAIL_MAX or _EMAIL.fullmatch(text) is None:
        return "Not a valid email address."
    return None


def password_problem(text: str) -> str | None:
    """Why a new password is refused, or None."""
    if not PASSWORD_MIN <= len(text) <= PASSWORD_MAX:
        return f"Between {PASSWORD_MIN} and {PASSWORD_MAX} characters."
    return None


def display_name_problem(text: str) -> str | None:
    """Why a display name typed by a person is refused, or None when it is fine (it is
    stored NFKC-normalised)."""
    if _HIDDEN.search(text) or _HIDDEN.search(normalize(text)):
        return "Control and text-direction characters are not allowed."
    if not text.strip():
        return "Must not be blank."
    if len(text) > DISPLAY_NAME_MAX:
        return f"At most {DISPLAY_NAME_MAX} characters."
    return None


def clean_display_name(text: str, fallback: str) -> str:
    """A display name from elsewhere (a login provider): the same rules, mended rather than
    refused; hidden characters dropped, whitespace collapsed, cut to the same limit."""
    name = " ".join(_HIDDEN.sub("", normalize(text)).split())
    return name[:DISPLAY_NAME_MAX].rstrip() or fallback
