"""Bearer tokens with scopes ``read``, ``write``, ``admin`` (each includes the ones before).

A token is 32 random bytes (``slf_`` + URL-safe base64); only its SHA-256 is kept — in
``[[api.tokens]]`` or in the catalog (``shelflife token create``). A high-entropy secret
needs no slow hash; the comparison is constant-time over every stored hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, select

from shelflife.catalog.catalog import _Guard
from shelflife.catalog.schema import api_tokens
from shelflife.config.model import Config
from shelflife.errors import UsageError

SCOPES = ("read", "write", "admin")
PREFIX = "slf_"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """``admin`` allows everything, ``write`` allows ``read``."""
        rank = {name: i for i, name in enumerate(SCOPES)}
        return any(rank[held] >= rank[scope] for held in self.scopes)


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str) -> tuple[str, ...]:
    scopes = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if not scopes or unknown:
        raise UsageError(
            f"scopes must be a comma-separated list of {', '.join(SCOPES)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
            hint="e.g. --scopes read,write",
        )
    return scopes


def store_token(engine: Engine, name: str, scopes: Iterable[str], now: datetime) -> str:
    """Create a token named ``name`` in the catalog; return it (it is not kept)."""
    token = new_token()
    with _Guard(engine, begin=True) as conn:
        exists = conn.execute(select(api_tokens.c.name).where(api_tokens.c.name == name)).first()
        if exists:
            raise UsageError(f"a token named {name!r} exists already", hint="choose another name")
        conn.execute(
            insert(api_tokens).values(
                name=name, hash=hash_token(token), scopes=",".join(scopes), created_at=now
            )
        )
    return token


class Tokens:
    """Every token the server accepts: the configuration's and the catalog's."""

    def __init__(self, config: Config, engine: Engine) -> None:
        self.config = config
        self.engine = engine

    def known(self) -> list[tuple[str, str, frozenset[str]]]:
        found: list[tuple[str, str, frozenset[str]]] = [
            (t.name, t.hash, frozenset(t.scopes)) for t in self.config.api.tokens
        ]
        with _Guard(self.engine, begin=False) as conn:
            rows = conn.execute(select(api_tokens.c.name, api_tokens.c.hash, api_tokens.c.scopes))
            found += [(name, h, frozenset(scopes.split(","))) for name, h, scopes in rows]
        return found

    def authenticate(self, token: str) -> Principal | None:
        presented = hash_token(token).encode()
        match = None
        for name, stored, scopes in self.known():  # no early exit: constant-time overall
            if hmac.compare_digest(presented, stored.encode()):
                match = Principal(name, scopes)
        return match
