"""URL helpers: masking credentials and reading the scheme."""

from __future__ import annotations

import re

__all__ = ["TYLER_NAMES", "mask_url", "mask_urls_in", "scheme_of"]

# The password runs to the last "@" before the path: drivers split the authority there, so an
# unencoded "@", "?" or "#" in a password stays inside what is masked.
_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/?#@\s]*):(?P<pw>[^/\s]*)@"
)
_PASSWORD_PARAM = re.compile(r"(?i)([?&](?:password|pass|pwd|secret|token)=)[^&#\s]*")

#: URLs without ``://`` that Tyler accepted: SQLite files and ``:memory:``.
TYLER_NAMES = (".db", ".sqlite", ".sqlite3")


def mask_url(url: str | None) -> str | None:
    """The URL with its password (and password-like query parameters) replaced by ``***``."""
    if url is None:
        return None
    return mask_urls_in(url)


def mask_urls_in(text: str) -> str:
    """Replace every URL password in a piece of text (an error message, say) by ``***``."""
    text = _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _PASSWORD_PARAM.sub(r"\1***", text)


def scheme_of(url: str) -> str:
    """The lower-cased scheme of ``url`` (the text before ``://``); ``""`` if there is none."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else ""
