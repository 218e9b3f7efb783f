"""The proofs an archive tier is verified by: what S3 and Azure report for given bytes,
computed while they are sent, however the bytes arrive in chunks."""

from __future__ import annotations

import base64
import hashlib

from hypothesis import given
from hypothesis import strategies as st

from shelflife.stores._obstore import read_stamps, stamp_metadata
from shelflife.stores.base import Stamps
from shelflife.stores.proofs import Hasher, md5_proof, s3_proofs

PART = 16


def by_hand(data: bytes, part: int) -> set[str]:
    """S3's spellings, computed the way its documentation describes them."""
    parts = [data[i : i + part] for i in range(0, len(data), part)] or [b""]
    expected = {
        "sha256:" + base64.b64encode(hashlib.sha256(data).digest()).decode(),
        "md5:" + hashlib.md5(data).hexdigest(),
    }
    if len(parts) > 1:
        composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts))
        expected.add("sha256:" + base64.b64encode(composite.digest()).decode())
        etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
        expected.add(f"md5:{etag}-{len(parts)}")
    return expected


@given(st.binary(max_size=100), st.lists(st.integers(1, 40), max_size=10))
def test_proofs_do_not_depend_on_how_the_bytes_arrive(data: bytes, cuts: list[int]) -> None:
    hasher = Hasher(PART)
    rest = memoryview(data)
    for cut in cuts:
        piece, rest = rest[:cut], rest[cut:]
        hasher.update(piece)
    hasher.update(rest)
    assert hasher.size == len(data)
    assert hasher.checksum() == "sha256:" + hashlib.sha256(data).hexdigest()
    assert hasher.proofs() == by_hand(data, PART)


def test_what_the_stores_report_is_read_in_the_same_spellings() -> None:
    data = b"x" * 40
    written = Hasher(PART)
    written.update(data)
    proofs = written.proofs()
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert s3_proofs(sha, None) <= proofs  # a single-part upload's checksum
    parts = [data[i : i + PART] for i in range(0, len(data), PART)]
    composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    # S3 spells a composite checksum with the part count; its ETag is quoted.
    assert s3_proofs(base64.b64encode(composite).decode() + "-3", None) <= proofs
    assert s3_proofs(None, '"' + hashlib.md5(data).hexdigest() + '"') <= proofs
    assert md5_proof(bytearray(hashlib.md5(data).digest())) <= proofs
    assert md5_proof(base64.b64encode(hashlib.md5(data).digest()).decode()) <= proofs
    assert not s3_proofs(None, '"' + "0" * 32 + '"') & proofs


def test_a_plain_hasher_keeps_only_the_checksum() -> None:
    hasher = Hasher()
    hasher.update(b"abc")
    assert hasher.proofs() == frozenset()


def test_stamps_round_trip_through_metadata_and_never_postdate_the_write() -> None:
    from datetime import UTC, datetime, timedelta

    written = datetime(2026, 5, 1, tzinfo=UTC)
    stamps = Stamps(created=written - timedelta(days=90), modified=written - timedelta(days=40))
    assert read_stamps(stamp_metadata(stamps), written) == stamps
    assert read_stamps({}, written) is None
    assert read_stamps({"mtime": "not a number"}, written) is None
    later = Stamps(created=written + timedelta(days=1), modified=written + timedelta(days=2))
    assert read_stamps(stamp_metadata(later), written) == Stamps(written, written)
    # rclone's spelling of mtime (nanoseconds) is read too
    assert read_stamps({"mtime": "1700000000.123456789"}, written) == Stamps(
        datetime.fromtimestamp(1700000000.123456789, UTC),
        datetime.fromtimestamp(1700000000.123456789, UTC),
    )
