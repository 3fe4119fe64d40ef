"""Secrets inside URLs and command lines: found, masked, and kept out of what others read.

A database URL may carry its password in the user-info (``scheme://user:pw@host``) or in
its query (``?password=...``); both are masked wherever a URL or a command line is shown or
stored (the study's URL in ``tuner.search.study``, a job's command in ``tuner.jobs``, the
driver's command line that Ray records for its dashboard in ``tuner.cluster``).
"""

from __future__ import annotations

import re

__all__ = ["SECRET_QUERY_KEYS", "URL_SECRET", "has_url_secret", "mask_url_secrets"]

# Query parameters that carry a secret in libpq, SQLAlchemy dialects and drivers.
SECRET_QUERY_KEYS = frozenset(
    {"password", "passwd", "pwd", "sslpassword", "secret", "token", "api_key"}
)
_KEYS = "|".join(sorted(SECRET_QUERY_KEYS))
# A password in a URL's user-info, or the value of a secret query parameter.
URL_SECRET = re.compile(
    rf"(?P<userinfo>://[^/@\s:]*:)[^/@\s]+@|(?P<query>[?&;](?:{_KEYS})=)[^&;#\s]*", re.I
)


def has_url_secret(text: str) -> bool:
    """Whether ``text`` holds a URL with a password (user-info or query)."""
    return URL_SECRET.search(text) is not None


def mask_url_secrets(text: str) -> str:
    """``text`` with every URL password shown as ``***``."""
    return URL_SECRET.sub(
        lambda m: f"{m['userinfo']}***@" if m["userinfo"] else f"{m['query']}***", text
    )
