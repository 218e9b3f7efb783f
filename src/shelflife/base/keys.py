"""Validation of object keys, in one place.

A key is an object's path relative to its tier root: ``/``-separated UTF-8, at most
1024 bytes, with no empty, ``.`` or ``..`` segment, no leading or trailing ``/``, no
backslash, and no NUL or other control character. Every entry point (CLI, Python API,
HTTP API, values read from reference columns) passes keys through :func:`validate_key`
before anything touches a store.
"""

from __future__ import annotations

import re

from shelflife.errors import InvalidKeyError

MAX_KEY_BYTES = 1024
_HINT = "use a relative path such as 'outputs/2026/render.mp4'"


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc, exactly
# A control character or a backslash: refused anywhere in a key.
_REFUSED_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\\\\]")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it may name an object; raise InvalidKeyError otherwise."""
    if (
        type(key) is str
        and 0 < len(key) <= MAX_KEY_BYTES
        and key.isascii()
        and key[0] not in "./"
        and key[-1] != "/"
        and "/." not in key
        and "//" not in key
        and _REFUSED_CHAR.search(key) is None
    ):
        return key  # the common case, in a few comparisons; the checks below say what is wrong
    return _validate_slowly(key)


def _validate_slowly(key: str) -> str:
    if not isinstance(key, str):
        raise InvalidKeyError(f"a key must be a string, not {type(key).__name__}", hint=_HINT)
    if not key:
        raise InvalidKeyError("the key is empty", hint=_HINT)
    if len(key) * 4 > MAX_KEY_BYTES or not key.isascii():
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidKeyError(f"key {key!r} is not valid UTF-8", hint=_HINT) from None
        if size > MAX_KEY_BYTES:
            raise InvalidKeyError(
                f"key is {size} bytes long; at most {MAX_KEY_BYTES} are allowed", hint=_HINT
            )
    control = _CONTROL.search(key)
    if control:
        raise InvalidKeyError(
            f"key {key!r} contains the control character {control.group()!r}", hint=_HINT
        )
    if "\\" in key:
        raise InvalidKeyError(f"key {key!r} contains a backslash", hint="separate folders with '/'")
    if key[0] == "/":
        raise InvalidKeyError(f"key {key!r} starts with '/'", hint=_HINT)
    if key[-1] == "/":
        raise InvalidKeyError(f"key {key!r} ends with '/'; a key names an object, not a folder")
    if "." in key or "//" in key:
        for segment in key.split("/"):
            if segment in ("", ".", ".."):
                shown = segment or "an empty segment ('//')"
                raise InvalidKeyError(f"key {key!r} contains {shown}", hint=_HINT)
    return key


def validate_prefix(prefix: str) -> str:
    """Validate a listing prefix: empty, or a key optionally ending in '/'."""
    if prefix in ("", None):
        return ""
    validate_key(prefix.rstrip("/") or "/")
    return prefix


def join_key(prefix: str, key: str) -> str:
    """Join a store prefix and a key with exactly one '/'."""
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key
