"""An upload's multipart body, read as it arrives and handed to the store as it is read.

No copy is staged on the server's disk: the store's own atomic write (a staging name and a
rename on a local tier, one PUT or a multipart upload on an object store) is the only one.

The ``key`` and ``tier`` fields say where the file goes, so the reader must know them
before it writes. Clients send them first as a rule (httpx, requests and browsers put
fields in the order they were given, curl in the order of its ``-F`` options). When the
file part comes first, up to :data:`WHOLE_BELOW` bytes of it are held in memory while the
rest of the body is read, so a small upload may carry its fields in any order. A larger
file part is streamed as soon as that much has arrived, under the fields seen before it
(or its file name, on the default tier); a ``key`` or ``tier`` field after such a part
is refused with 400, and the write is abandoned before anything is published.

Every way a body can go wrong ends the write before it is published, so nothing is left
under the key: malformed multipart (400), a second ``file`` part (400), a body cut short
or a client gone mid-body (400), a body past ``[api] max_upload_size`` (413, counted by
:class:`shelflife.api.errors.UploadLimit`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from shelflife.api.errors import ApiError

WHOLE_BELOW = 1024 * 1024  # a file part up to this size is read whole before it is written
WRITE_CHUNK = 1024 * 1024  # bytes handed to the store at a time when streaming
FIELD_LIMIT = 64 * 1024  # bytes in one plain field (a key is at most 1024)
PARTS_LIMIT = 100  # parts in one body
PLACE_FIELDS = ("key", "tier")

ORDER_HINT = "send the 'key' and 'tier' fields before the 'file' part"


def missing_file() -> ApiError:
    return ApiError(
        422,
        "invalid_request",
        "body.file: Field required",
        hint="send multipart/form-data with the object's bytes in a part named 'file'",
    )


@dataclass
class _Part:
    kind: str = ""  # "field", "file" (the upload's) or "skip" (another file part)
    name: str = ""
    header_name: bytes = b""
    header_value: bytes = b""
    disposition: bytes = b""
    data: bytearray = field(default_factory=bytearray)


class UploadBody:
    """The fields and the file of one upload, parsed from the request's stream.

    :meth:`read_head` reads until where the file goes is known; then :attr:`whole` holds
    the file's bytes if it was small enough to read whole, else :meth:`stream` yields
    them as they arrive (and reads the body to its end)."""

    def __init__(self, request: Request) -> None:
        content_type = request.headers.get("content-type", "")
        kind, options = parse_options_header(content_type)
        if kind != b"multipart/form-data":
            raise missing_file()
        boundary = options.get(b"boundary")
        if not boundary:
            raise ApiError(
                400,
                "bad_request",
                "the multipart/form-data body has no boundary in its Content-Type",
                hint="let the HTTP client build the multipart body (it sets the boundary)",
            )
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.whole: bytes | None = None
        self._chunks = request.stream()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )
        self._part = _Part()
        self._parts = 0
        self._file: list[bytes] = []  # file bytes parsed and not yet handed on
        self._file_size = 0  # bytes in self._file
        self._file_total = 0  # bytes of the file part parsed so far
        self._file_started = False
        self._file_done = False
        self._ended = False  # the closing boundary was parsed
        self._exhausted = False  # the request's stream has no more chunks
        # Why reading stopped, if it failed: a store may wrap what its source raised, and
        # the client should hear the reason (400, 413), not the store's account of it.
        self.failure: BaseException | None = None

    # -- reading ---------------------------------------------------------------------------

    async def read_head(self) -> None:
        """Read until the file part has ended or is too large to hold, then (if it ended)
        to the end of the body; 422 if the body holds no file part."""
        while not self._file_done and self._file_size <= WHOLE_BELOW:
            if not await self._feed():
                break
        if self._file_done:
            while await self._feed():
                pass
            self.whole = b"".join(self._file)
            self._file.clear()
        elif not self._file_started:
            raise missing_file()

    async def stream(self) -> AsyncIterator[bytes]:
        """The file's bytes, in chunks of about :data:`WRITE_CHUNK`; the body is read to
        its end before the last chunk is given, so a problem anywhere in it (a place field
        after the file, a cut) stops the write before the object is published."""
        while not self._file_done:
            if self._file_size >= WRITE_CHUNK:
                yield self._take_file()
            if not await self._feed():
                break
        while await self._feed():
            pass
        if self._file:
            yield self._take_file()

    def _take_file(self) -> bytes:
        data = b"".join(self._file)
        self._file.clear()
        self._file_size = 0
        return data

    async def _feed(self) -> bool:
        """Parse the next chunk of the body; False once the body has ended."""
        try:
            return await self._parse_next()
        except BaseException as exc:
            self.failure = exc
            raise

    async def _parse_next(self) -> bool:
        if self._exhausted:
            return False
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            chunk = b""
            self._exhausted = True
        except ClientDisconnect:
            raise ApiError(
                400,
                "bad_request",
                "the client disconnected before the upload's body was complete; nothing was stored",
            ) from None
        if chunk:
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise ApiError(
                    400,
                    "bad_request",
                    f"the body is not valid multipart/form-data: {exc}",
                    hint="let the HTTP client build the multipart body",
                ) from None
        elif not self._exhausted:
            return True  # an empty message; the body goes on
        if self._exhausted and not self._ended:
            raise ApiError(
                400,
                "bad_request",
                "the multipart body ended before its closing boundary; nothing was stored",
                hint="the upload was cut short: send it again",
            )
        return not self._exhausted

    # -- parser callbacks (synchronous, called from within parser.write) -----------------

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > PARTS_LIMIT:
            raise ApiError(400, "bad_request", f"more than {PARTS_LIMIT} parts in one upload")
        self._part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._part.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._part.header_value += data[start:end]

    def _header_end(self) -> None:
        part = self._part
        if part.header_name.lower() == b"content-disposition":
            part.disposition = part.header_value
        part.header_name = part.header_value = b""

    def _headers_finished(self) -> None:
        part = self._part
        _, options = parse_options_header(part.disposition)
        if b"name" not in options:
            raise ApiError(
                400,
                "bad_request",
                "a part of the multipart body has no name in its Content-Disposition",
            )
        part.name = _text(options[b"name"], "a part's name")
        if b"filename" not in options:
            if part.name == "file":
                raise ApiError(
                    422,
                    "invalid_request",
                    "body.file: expected a file (a part with a filename), got a plain field",
                    hint="send the object's bytes as a file part: "
                    'Content-Disposition: form-data; name="file"; filename="..."',
                )
            if self._file_total > WHOLE_BELOW and part.name in PLACE_FIELDS:
                # by size, not by how the bytes happened to arrive: the same body gets the
                # same answer whether the file came in one chunk or in many
                raise ApiError(
                    400,
                    "bad_request",
                    f"the {part.name!r} field came after a file part of more than "
                    f"{WHOLE_BELOW} bytes; such a file is written as it arrives, so the "
                    "fields that say where it goes must come first; nothing was stored",
                    hint=ORDER_HINT,
                )
            part.kind = "field"
        elif part.name != "file":
            part.kind = "skip"  # a file part the API does not know: read past it
        elif self._file_started:
            raise ApiError(
                400,
                "bad_request",
                "the body holds more than one 'file' part; an upload stores one file",
                hint="send one request per file",
            )
        else:
            part.kind = "file"
            self._file_started = True
            self.filename = _text(options[b"filename"], "the file name")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.kind == "file":
            self._file.append(data[start:end])
            self._file_size += end - start
            self._file_total += end - start
        elif part.kind == "field":
            part.data += data[start:end]
            if len(part.data) > FIELD_LIMIT:
                raise ApiError(
                    400,
                    "bad_request",
                    f"the {part.name!r} field is longer than {FIELD_LIMIT} bytes",
                )

    def _part_end(self) -> None:
        part = self._part
        if part.kind == "file":
            self._file_done = True
        elif part.kind == "field":
            self.fields[part.name] = _text(bytes(part.data), f"the {part.name!r} field")

    def _end(self) -> None:
        self._ended = True


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", f"{what} is not valid UTF-8") from None


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def overwrite_flag(query_string: bytes) -> bool:
    """``?overwrite=`` as FastAPI would read a boolean query parameter (the last one
    given counts); 422 for a value that is not a boolean."""
    if not query_string:
        return False
    values = [v for k, v in parse_qsl(query_string.decode("latin-1"), True) if k == "overwrite"]
    if not values:
        return False
    value = values[-1].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ApiError(
        422,
        "invalid_request",
        "query.overwrite: Input should be a valid boolean, unable to interpret input",
    )


# The route reads its body, token and query itself; this is how OpenAPI describes them.
UPLOAD_OPENAPI = {
    "parameters": [
        {
            "name": "overwrite",
            "in": "query",
            "required": False,
            "schema": {"type": "boolean", "default": False},
            "description": "replace an existing object",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "contentMediaType": "application/octet-stream",
                            "description": "the object's bytes",
                        },
                        "key": {
                            "type": "string",
                            "description": "its key (default: the file name); "
                            "send it before the file",
                        },
                        "tier": {
                            "type": "string",
                            "description": "its tier (default: local); send it before the file",
                        },
                    },
                },
                "encoding": {"file": {"contentType": "application/octet-stream"}},
            }
        },
    },
}
