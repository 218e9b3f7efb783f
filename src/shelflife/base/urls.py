"""Showing a URL without its secrets.

A webhook URL may carry a token anywhere: a password in its userinfo, a value in its
query (``?token=…``), or its path itself (``https://hooks.slack.com/services/T0/B0/XYZ``).
:func:`mask_url` keeps what tells targets apart — scheme, host, port, the first segment of
the path, the query's names — and hides the rest; :func:`url_secrets` lists the hidden
parts, for the log filter (:func:`shelflife.base.logs.register_secret`).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from shelflife.base.logs import MASK

_SECRET_NAME = re.compile(r"token|key|secret|sig|auth|pass|code|cred|session", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``https://user:pw@host:8443/hooks/T0/XYZ?token=abc#f`` →
    ``https://user:***@host:8443/hooks/***?token=***``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return MASK
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    if parts.username is not None:
        user = parts.username if parts.password is None else f"{parts.username}:{MASK}"
        netloc = f"{user}@{netloc}"
    head, rest = _split_path(parts.path)
    path = head + (f"/{MASK}" if rest else "")
    query = "&".join(
        f"{quote(name, safe='')}={MASK}"
        for name, _ in parse_qsl(parts.query, keep_blank_values=True)
    )
    if parts.query and not query:
        query = MASK
    return f"{parts.scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that :func:`mask_url` hides, as written and decoded."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return [url]
    found = [] if mask_url(url) == url else [url]
    if password:
        found += [password, unquote(password)]
    _, rest = _split_path(parts.path)
    if rest:
        found += [rest, unquote(rest)]
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        # Not every value is a secret (``format=json``): one the log filter masks in
        # every line is one that looks like a credential, by its name or its length.
        if len(value) >= 8 or _SECRET_NAME.search(name):
            found += [value, quote(value, safe="")]
    if parts.query:
        found.append(parts.query)
    return [value for value in dict.fromkeys(found) if value]


def _split_path(path: str) -> tuple[str, str]:
    """``/hooks/T0/XYZ`` → (``/hooks``, ``T0/XYZ``): the first segment, and the rest."""
    if not path or path == "/":
        return path, ""
    first, _, rest = path.lstrip("/").partition("/")
    return f"/{first}", rest
