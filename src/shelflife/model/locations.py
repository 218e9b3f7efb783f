"""How rows spell locations: the one resolver from a stored value to (tier, key), and back.

Each tier has a ``ref_format`` (``data/storage/outputs/{key}``, ``s3://bucket/out/{key}``)
and optional ``ref_aliases`` (other spellings of the same place). Every part of shelflife
that reads a value a row holds — the reference snapshot, the sweep-time re-check, audit,
``listen``, ``url``/``get`` and migration — resolves it here, the same way:

- Leading and trailing whitespace is ignored; a blank value is NULL (names nothing).
- A value is matched against every template, the longest literal first. It may match
  several (a tier nested in another's folder): it then names every one of them.
- A template whose text starts with a URL scheme (``https://``, ``s3://``, ``file://``)
  reads values by URL rules: the query string and fragment are ignored (a stored
  presigned URL still names its object) and percent-encoding is decoded
  (``covers/c%200.jpg`` names the key ``covers/c 0.jpg``). Since an S3 key may itself
  hold ``%``, ``?`` or ``#``, the literal reading is a candidate too: web templates
  (``http``, ``https``, ``file``) prefer the decoded key, the others the literal one.
- A value no template with literal text matches is a bare key, naming that key on every
  tier whose spelling is the bare ``{key}``. A URL-shaped value (``scheme://…``) is never
  a bare key.

Every candidate a value yields is protected from collection; ``url``/``get`` try them in
order. A value that matches no spelling but names a tier's bucket, container or folder
under another scheme, case or host spelling (``s3a://bucket/…`` for ``s3://bucket/…``)
is a *near miss*: see :meth:`Locator.near_miss`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from shelflife.base.keys import validate_key
from shelflife.config.model import Config, TierConfig
from shelflife.errors import InvalidKeyError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_URL_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>`]+")
WEB_SCHEMES = frozenset({"http", "https", "file"})
# Where a reference ends inside free text (Markdown, HTML, prose).
_TERMINATORS = re.compile(r"[\s\"'<>`]")
_SOFT = " '"  # a run goes on past these (keys may hold spaces and apostrophes)
_DELIMITED = re.compile(r"[\s\"'<>`)\]}]|[.,;:!?]$")  # what free text ends a reference at
_CLOSERS = ")]}"
_TRAILING = ".,;:!?"
_MAX_WORDS = 4  # a reference in free text may run over this many spaces (keys with spaces)
_MIN_ANCHOR = 3


@dataclass(frozen=True, slots=True)
class Location:
    tier: str
    key: str


def url_scheme(value: str) -> str | None:
    """The lower-cased scheme of a URL-shaped value (``S3://x`` → ``s3``), or None."""
    match = _SCHEME.match(value)
    return match.group(1).lower() if match else None


@dataclass(frozen=True, slots=True)
class _Template:
    tier: str
    head: str
    tail: str
    scheme: str | None  # the head's URL scheme, lower-cased, if it has one

    @property
    def literal(self) -> int:
        return len(self.head) + len(self.tail)

    @property
    def web(self) -> bool:
        return self.scheme in WEB_SCHEMES

    def render(self, key: str, *, encoded: bool) -> str:
        return self.head + (quote(key) if encoded else key) + self.tail

    def keys(self, value: str) -> list[str]:
        """The keys ``value`` may name through this template, preferred first."""
        if not value.startswith(self.head):
            return []
        rest = value[len(self.head) :]
        literal = self._strip_tail(rest)
        if self.scheme is None:
            return [literal] if literal else []
        base = re.split(r"[?#]", rest, maxsplit=1)[0]
        stripped = self._strip_tail(base)
        decoded = _decode(stripped) if stripped and "%" in stripped else stripped
        order = [decoded, stripped, literal] if self.web else [literal, stripped, decoded]
        keys: list[str] = []
        for key in order:
            if key and key not in keys:
                keys.append(key)
        return keys

    def _strip_tail(self, rest: str) -> str | None:
        if not self.tail:
            return rest or None
        if len(rest) > len(self.tail) and rest.endswith(self.tail):
            return rest[: -len(self.tail)]
        return None


class Locator:
    """The resolver: values to locations, locations to values."""

    def __init__(self, config: Config) -> None:
        self._formats: dict[str, _Template] = {}
        specific: list[_Template] = []
        self._bare: list[str] = []
        # (kind, folded place, tier): "bucket" (an object store's bucket/prefix), "host"
        # (a web spelling's host/path) or "folder" (a path, matched anywhere in a path)
        self._anchors: list[tuple[str, str, str]] = []
        self._storage_hosts: set[str] = set()
        for name, tier in config.tiers.items():
            for position, text in enumerate((tier.ref_format, *tier.ref_aliases)):
                head, _, tail = text.partition("{key}")
                template = _Template(name, head, tail, url_scheme(head))
                if position == 0:
                    self._formats[name] = template
                if head or tail:
                    specific.append(template)
                    self._add_anchor(_anchor_kind(template.scheme), _place(head), name)
                elif name not in self._bare:
                    self._bare.append(name)
            kind, anchor = _store_anchor(tier)
            if anchor:
                self._add_anchor(kind, anchor, name)
            if tier.endpoint:
                host = urlsplit(tier.endpoint).hostname
                if host:
                    self._storage_hosts.add(host.lower())
        # Longest literal first: 'data/storage/outputs/archive/{key}' is tried before
        # 'data/storage/outputs/{key}' for values under the archive folder.
        self._templates = sorted(specific, key=lambda t: t.literal, reverse=True)
        self._heads = sorted({t.head for t in specific if t.head}, key=len, reverse=True)
        self._plain = _plain_heads(self._templates)

    @property
    def plain_heads(self) -> list[tuple[str, str]]:
        """The spellings whose values sort as their keys do: ``(head, tier)`` for each
        template that is a literal head before ``{key}`` and nothing after it, which no
        other template's head begins or is begun by. A value ``head + key`` is read by
        :meth:`plain` without the resolver, and such values of one head, in byte order,
        are their keys in byte order."""
        return [(head, tier) for head, tier, _url, _nested in self._plain]

    def plain(self, value: str) -> tuple[int, str] | None:
        """(index into :attr:`plain_heads`, key) when ``value`` is a plain spelling — one
        the resolver reads as exactly that one location — else None (ask :meth:`resolve`).

        Plain: the value starts with a plain head, has no surrounding blanks, its key is
        valid and, for URL spellings, holds no ``%``, ``?`` or ``#`` (which the resolver
        reads in more than one way)."""
        for index, (head, _tier, url, nested) in enumerate(self._plain):
            if not value.startswith(head):
                continue
            key = value[len(head) :]
            if (
                not key
                or (url and _URL_MARKS.search(key) is not None)
                or (nested and value.startswith(nested))
                or value[0].isspace()
                or value[-1].isspace()
                or not _valid(key)
            ):
                return None
            return index, key
        return None

    def _add_anchor(self, kind: str, anchor: str, tier: str) -> None:
        folded = anchor.casefold()
        if len(folded.strip("/")) >= _MIN_ANCHOR and (kind, folded, tier) not in self._anchors:
            self._anchors.append((kind, folded, tier))

    # -- values to locations -----------------------------------------------------------------

    def resolve(self, value: str) -> list[Location]:
        """Every location ``value`` may name, preferred first; [] for a blank value or one
        that matches no tier's spelling."""
        text = value.strip()
        if not text:
            return []
        readings = [text] if text == value else [text, value]
        found: list[Location] = []
        for reading in readings:
            for template in self._templates:
                for key in template.keys(reading):
                    location = Location(template.tier, key)
                    if location not in found and _valid(key):
                        found.append(location)
        if found or not self._bare or url_scheme(text) is not None:
            return found
        return [Location(tier, r) for r in readings if _valid(r) for tier in self._bare]

    def only_bare(self, locations: list[Location]) -> bool:
        """Whether ``locations`` came from bare-key tiers alone (no spelling matched)."""
        return bool(locations) and all(loc.tier in self._bare for loc in locations)

    def parse(self, value: str) -> Location | None:
        """The preferred location a value names, or None."""
        found = self.resolve(value)
        return found[0] if found else None

    def spans(self, text: str) -> Iterator[tuple[int, list[str]]]:
        """Per place a tier's spelling starts in free text (Markdown, HTML, prose): its start
        and the candidate references there, each a prefix of ``text[start:]`` running to a
        quote, bracket or space; runs over a few spaces and apostrophes, and cuts at a
        closing bracket or trailing punctuation, are offered too (keys may hold spaces;
        Markdown wraps links in parentheses)."""
        for head in self._heads:
            start = text.find(head)
            while start != -1:
                yield start, list(dict.fromkeys(_runs(text, start, len(head))))
                start = text.find(head, start + 1)

    def url_tokens(self, text: str) -> Iterator[str]:
        """URL-shaped tokens of free text (for near-miss detection)."""
        for match in _URL_TOKEN.finditer(text):
            yield match.group().rstrip(_TRAILING + _CLOSERS)

    # -- near misses -------------------------------------------------------------------------

    def near_miss(self, value: str, resolved: Iterable[str] = ()) -> str | None:
        """The tier whose bucket, container or folder ``value`` names under a spelling no
        tier declares (another scheme, case or host), or None. For values that resolve to
        nothing, or only as bare keys on the tiers ``resolved``: a bare key that starts
        with such a tier's own bucket and prefix (or folder path) is a near miss too, one
        that starts with its bucket name alone may be a key like any other."""
        found = self._near(value.strip())
        if found is None:
            return None
        tier, _, anchor = found
        if tier in set(resolved) and anchor.strip("/").count("/") == 0:
            return None
        return tier

    def _near(self, text: str) -> tuple[str, str, str] | None:
        """(tier, the place form that matched, its anchor), or None."""
        if not self._anchors or any(text.startswith(t.head) for t in self._templates if t.head):
            return None  # a declared spelling around a key that is not valid: unmatched
        scheme = url_scheme(text)
        for kind, anchor, tier in self._anchors:
            for form in self._forms(text, scheme, kind):
                folded = form.casefold()
                if folded.startswith(anchor):
                    return tier, form, anchor
                if kind == "folder" and ("/" + anchor) in folded:
                    at = folded.index("/" + anchor) + 1
                    return tier, form[at:], anchor
        return None

    def _forms(self, text: str, scheme: str | None, kind: str) -> list[str]:
        """The places ``text`` may name, as an anchor of ``kind`` is compared with them."""
        if scheme is None:
            return [unquote(text).lstrip("/")] if kind in ("bucket", "folder") else []
        try:
            parts = urlsplit(text)
            host = (parts.hostname or "").lower()
        except ValueError:
            return []
        path = unquote(parts.path).lstrip("/")
        if kind == "host":
            return [f"{host}/{path}"] if host else []
        if kind == "folder":
            return [path] if scheme == "file" else []
        if scheme not in WEB_SCHEMES:  # s3a://bucket/…, S3://bucket/…, gs://…
            return [f"{host}/{path}"]
        if not self._storage_host(host):
            return []
        labels = host.split(".")
        # path-style (https://s3.amazonaws.com/bucket/…) and virtual-hosted
        # (https://bucket.s3.us-east-1.amazonaws.com/…, dotted bucket names too)
        return [path] + [".".join(labels[:i]) + "/" + path for i in range(1, len(labels))]

    def _storage_host(self, host: str) -> bool:
        if host in self._storage_hosts or host in ("localhost", "127.0.0.1", "::1"):
            return True
        if re.fullmatch(r"[\d.]+|[0-9a-f]*:[0-9a-f:]+", host):
            return True  # an address: a self-hosted store's endpoint
        return any(marker in host for marker in _STORAGE_HOSTS)

    def suggest_alias(self, value: str, tier: str) -> str:
        """A ``ref_aliases`` entry that would make ``value``'s spelling resolve on ``tier``."""
        text = value.strip()
        base = re.split(r"[?#]", text, maxsplit=1)[0] if url_scheme(text) else text
        near = self._near(text)
        if near is not None and near[0] == tier:
            _, form, anchor = near
            key = form[len(anchor) :]
            for candidate in (key, quote(key)):
                if candidate and base.endswith(candidate):
                    return base[: len(base) - len(candidate)] + "{key}"
        return base.rsplit("/", 1)[0] + "/{key}"

    # -- locations to values -----------------------------------------------------------------

    def render(self, location: Location) -> str:
        """The value a row stores for this location: the tier's ``ref_format``, the key
        percent-encoded where the spelling is a web URL."""
        template = self._formats[location.tier]
        return template.render(location.key, encoded=template.web)

    def render_in_text(self, location: Location, old: str) -> str:
        """:meth:`render_like` for a reference inside free text: a key holding characters
        that delimit references in text is percent-encoded where the spelling is a URL, so
        that the text reads back as the same key."""
        template = self._formats[location.tier]
        if template.scheme is not None and _DELIMITED.search(location.key):
            text = old.strip()
            value = template.render(location.key, encoded=True)
            scheme = url_scheme(text)
            if scheme in WEB_SCHEMES and template.web:
                for mark in ("?", "#"):
                    if mark in text:
                        return value + text[text.index(mark) :]
            return value
        return self.render_like(location, old)

    def render_like(self, location: Location, old: str) -> str:
        """The value for ``location`` replacing ``old`` (a value being rewritten): the tier's
        ``ref_format``, with ``old``'s query string or fragment kept where both are web URLs."""
        template = self._formats[location.tier]
        text = old.strip()
        scheme = url_scheme(text)
        value = template.render(location.key, encoded=template.web)
        if scheme in WEB_SCHEMES and template.web:
            for mark in ("?", "#"):
                if mark in text:
                    value += text[text.index(mark) :]
                    break
        return value

    def spellings_on(self, tier: str, key: str) -> list[str]:
        """Every whole value naming ``key`` on ``tier`` by a declared spelling, literal and
        percent-encoded."""
        values: list[str] = []
        for template in self._templates:
            if template.tier != tier:
                continue
            for encoded in (False, True) if template.scheme else (False,):
                value = template.render(key, encoded=encoded)
                if value not in values:
                    values.append(value)
        if tier in self._bare and key not in values:
            values.append(key)
        return values

    def spellings(self, key: str) -> list[str]:
        """Every whole value naming ``key`` on any tier (for per-batch re-checks)."""
        values: set[str] = {key}
        for tier in self._formats:
            values.update(self.spellings_on(tier, key))
        return sorted(values)

    def shared_spellings(self) -> list[tuple[str, list[str]]]:
        """Spellings declared by more than one tier: ``(template, tiers)``."""
        owners: dict[str, list[str]] = {}
        for template in [*self._templates, *(_Template(t, "", "", None) for t in self._bare)]:
            text = template.head + "{key}" + template.tail
            if template.tier not in owners.setdefault(text, []):
                owners[text].append(template.tier)
        return [(text, tiers) for text, tiers in owners.items() if len(tiers) > 1]

    @property
    def bare_tiers(self) -> list[str]:
        return list(self._bare)

    @property
    def tiers(self) -> list[str]:
        return list(self._formats)


_URL_MARKS = re.compile("[%?#]")


def _plain_heads(templates: list[_Template]) -> list[tuple[str, str, bool, tuple[str, ...]]]:
    """The templates :meth:`Locator.plain` reads: (head, tier, is a URL spelling, the
    longer heads nested in it). A template is left out when another one matches every
    value it does (its head begins this head: ``files/{key}`` before
    ``files/archive/{key}`` — then both name such values), or when it has a tail."""
    plain: list[tuple[str, str, bool, tuple[str, ...]]] = []
    for template in templates:
        if template.tail or not template.head:
            continue
        others = [t for t in templates if t is not template]
        if any(template.head.startswith(t.head) for t in others):
            continue  # a shorter (or equal) head reads these values too
        nested = tuple(t.head for t in others if t.head.startswith(template.head))
        plain.append((template.head, template.tier, template.scheme is not None, nested))
    # A value is tried against the longest head first (a nested head is never plain).
    plain.sort(key=lambda item: len(item[0]), reverse=True)
    return plain


def _decode(text: str) -> str | None:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        return None


def _valid(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidKeyError:
        return False
    return True


def _runs(text: str, start: int, head: int) -> Iterator[str]:
    """The candidate references starting at ``start`` (see :meth:`Locator.spans`)."""
    end = start + head
    words = 0
    limit = start + head + 1024
    while end < len(text) and end < limit:
        match = _TERMINATORS.search(text, end, limit)
        stop = match.start() if match else min(len(text), limit)
        piece = text[start:stop]
        yield from _trimmed(piece, head)
        if not match or text[stop] not in _SOFT or words >= _MAX_WORDS:
            return
        words += 1
        end = stop + 1


def _trimmed(piece: str, head: int) -> Iterator[str]:
    yield piece
    cut = piece
    for closer in _CLOSERS:
        at = cut.find(closer, head)
        if at != -1:
            cut = cut[:at]
    for variant in (cut, cut.rstrip(_TRAILING), piece.rstrip(_TRAILING + _CLOSERS)):
        if variant and variant != piece:
            yield variant


_STORAGE_HOSTS = (
    "amazonaws.com",
    "googleapis.com",
    "windows.net",
    "digitaloceanspaces.com",
    "wasabisys.com",
    "backblazeb2.com",
    "cloudflarestorage.com",
    "oraclecloud.com",
    "linodeobjects.com",
    "minio",
)


def _anchor_kind(scheme: str | None) -> str:
    if scheme is None or scheme == "file":
        return "folder"
    return "host" if scheme in WEB_SCHEMES else "bucket"


def _place(head: str) -> str:
    """The place a spelling's literal head names, without its scheme (and a web host's
    port)."""
    scheme = url_scheme(head)
    if scheme is None:
        return head.lstrip("/")
    rest = unquote(head[len(scheme) + 3 :]).lstrip("/")
    host, slash, path = rest.partition("/")
    if scheme in WEB_SCHEMES and scheme != "file":
        host = host.rsplit("@", 1)[-1].split(":", 1)[0]
    return host + slash + path


def _store_anchor(tier: TierConfig) -> tuple[str, str]:
    """The tier's bucket/container (and prefix), or its folder, as an anchor."""
    parts = urlsplit(tier.url)
    if tier.scheme == "file":
        path = unquote(parts.netloc + parts.path).strip("/")
        return "folder", (path + "/" if path else "")
    if tier.scheme == "memory":
        return "bucket", ""
    prefix = parts.path.strip("/")
    return "bucket", (f"{parts.netloc}/{prefix}/" if prefix else f"{parts.netloc}/")


__all__ = ["WEB_SCHEMES", "Location", "Locator", "url_scheme"]
