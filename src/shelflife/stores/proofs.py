"""Proofs that a store holds given bytes, without reading them back.

A copy is verified by what the store itself says of the bytes it received (a tier's
``verify = "checksum"``, and always in an archive storage class — S3 GLACIER or
DEEP_ARCHIVE, Azure Archive — whose objects cannot be read until restored): S3's
``x-amz-checksum-sha256`` (whole, or composite over the parts of a multipart upload) or
its ETag (the MD5 of a single-part upload, or the MD5 of the parts' MD5s), Azure's
Content-MD5 — and the size. The writer hashes what it sends the same ways
(:class:`Hasher`), and the copy is good when the store reports one of them: in the
upload's own answer (an S3 ETag), or asked afterwards (a HEAD).

A proof is spelled ``sha256:<base64>`` or ``md5:<hex>`` (a multipart MD5 ETag keeps its
``-N`` suffix, as S3 writes it).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any


class Hasher:
    """SHA-256 of the bytes written; with ``md5``, also the whole-object proofs a store
    may report (MD5 and SHA-256); with ``part_size``, those and the proofs of an upload
    in parts of that size (per-part MD5 and SHA-256, combined as S3 combines them).

    hashlib releases the GIL while it hashes a buffer of more than 2 KiB, so other
    transfers go on meanwhile."""

    def __init__(self, part_size: int | None = None, *, md5: bool = False) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.part_size = part_size
        self._md5: Any = hashlib.md5(usedforsecurity=False) if part_size or md5 else None
        self._part_sha: list[bytes] = []
        self._part_md5: list[bytes] = []
        self._current: tuple[Any, Any] | None = None
        self._filled = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.sha256.update(data)
        self.size += len(data)
        if self._md5 is None:
            return
        self._md5.update(data)
        if self.part_size is None:
            return
        view = memoryview(data)
        while view:
            if self._current is None:
                self._current = (hashlib.sha256(), hashlib.md5(usedforsecurity=False))
                self._filled = 0
            room = self.part_size - self._filled
            piece, view = view[:room], view[room:]
            self._current[0].update(piece)
            self._current[1].update(piece)
            self._filled += len(piece)
            if self._filled == self.part_size:
                self._close_part()

    def _close_part(self) -> None:
        if self._current is not None:
            self._part_sha.append(self._current[0].digest())
            self._part_md5.append(self._current[1].digest())
            self._current = None

    def checksum(self) -> str:
        return "sha256:" + self.sha256.hexdigest()

    def proofs(self) -> frozenset[str]:
        """What a store may report for these bytes, in every spelling it may use."""
        if self._md5 is None:
            return frozenset()
        self._close_part()
        found = {
            "sha256:" + base64.b64encode(self.sha256.digest()).decode(),
            "md5:" + self._md5.hexdigest(),
        }
        if len(self._part_sha) > 1:
            count = len(self._part_sha)
            composite = hashlib.sha256(b"".join(self._part_sha)).digest()
            found.add("sha256:" + base64.b64encode(composite).decode())
            etag = hashlib.md5(b"".join(self._part_md5), usedforsecurity=False).hexdigest()
            found.add(f"md5:{etag}-{count}")
        return frozenset(found)


def s3_proofs(checksum_sha256: str | None, etag: str | None) -> set[str]:
    """The proofs in an S3 HEAD answer (asked with ``ChecksumMode=ENABLED``)."""
    found = set()
    if checksum_sha256:
        found.add("sha256:" + checksum_sha256.split("-")[0])
    if etag:
        found.add("md5:" + etag.strip('"'))
    return found


def md5_proof(content_md5: bytes | bytearray | str | None) -> set[str]:
    """The proof in a Content-MD5 (raw bytes, or base64 as the header spells it)."""
    if not content_md5:
        return set()
    raw = base64.b64decode(content_md5) if isinstance(content_md5, str) else bytes(content_md5)
    return {"md5:" + raw.hex()}
