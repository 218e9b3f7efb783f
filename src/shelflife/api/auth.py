"""Bearer tokens with scopes ``read``, ``write``, ``admin`` (each includes the ones before).

A token is 32 random bytes (``slf_`` + URL-safe base64); only its SHA-256 is kept — in
``[[api.tokens]]`` or in the catalog (``shelflife token create``). A high-entropy secret
needs no slow hash; the comparison is constant-time over every stored hash.

A server remembers a token it has accepted for ``[api] token_cache_ttl`` (5 s), so most
requests cost no catalog read; a token revoked in the catalog is therefore refused at the
latest that long after its revocation. Refusals are not remembered: a new token works at
once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, select

from shelflife.catalog.catalog import _Guard
from shelflife.catalog.schema import api_tokens
from shelflife.config.model import Config
from shelflife.errors import UsageError

SCOPES = ("read", "write", "admin")
PREFIX = "slf_"
_RANK = {name: i for i, name in enumerate(SCOPES)}
CACHE_LIMIT = 4096  # tokens remembered at once (a server sees a handful)


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """``admin`` allows everything, ``write`` allows ``read``."""
        return any(_RANK[held] >= _RANK[scope] for held in self.scopes)


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

    def __init__(
        self,
        config: Config,
        engine: Engine,
        *,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.engine = engine
        self.ttl = config.api.token_cache_ttl.total_seconds() if ttl is None else ttl
        self._clock = clock
        self._accepted: dict[str, tuple[float, Principal]] = {}  # hash -> (until, principal)
        self._lock = threading.Lock()

    def known(self) -> list[tuple[str, str, frozenset[str]]]:
        found: list[tuple[str, str, frozenset[str]]] = [
            (t.name, t.hash, frozenset(t.scopes)) for t in self.config.api.tokens
        ]
        with _Guard(self.engine, begin=False) as conn:
            rows = conn.execute(select(api_tokens.c.name, api_tokens.c.hash, api_tokens.c.scopes))
            found += [(name, h, frozenset(scopes.split(","))) for name, h, scopes in rows]
        return found

    def remembered(self, token: str) -> Principal | None:
        """The principal of a token accepted less than ``ttl`` ago, without a catalog read.

        The lookup is by the token's SHA-256: timing can tell at most how much of that
        hash matched a remembered one, which says nothing about any token."""
        entry = self._accepted.get(hash_token(token))
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def authenticate(self, token: str) -> Principal | None:
        """The principal the token names, remembered for ``ttl`` once accepted."""
        principal = self.remembered(token)
        if principal is not None:
            return principal
        presented = hash_token(token)
        match = None
        for name, stored, scopes in self.known():  # no early exit: constant-time overall
            if hmac.compare_digest(presented.encode(), stored.encode()):
                match = Principal(name, scopes)
        if match is not None and self.ttl > 0:
            self._remember(presented, match)
        return match

    def _remember(self, presented: str, principal: Principal) -> None:
        now = self._clock()
        with self._lock:
            if len(self._accepted) >= CACHE_LIMIT:
                self._accepted = {h: e for h, e in self._accepted.items() if e[0] > now}
                if len(self._accepted) >= CACHE_LIMIT:
                    self._accepted.clear()
            self._accepted[presented] = (now + self.ttl, principal)
