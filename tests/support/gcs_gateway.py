"""GCS's XML API in front of gcp-storage-emulator, which serves the JSON API.

obstore (Rust's object_store) reaches GCS through the XML API only: ``PUT``, ``GET``,
``HEAD`` and ``DELETE /BUCKET/KEY``, ``GET /BUCKET?list-type=2``, ``PUT`` with
``x-goog-copy-source``, ``POST ?uploads`` for multipart uploads. gcp-storage-emulator
implements the JSON API (``/storage/v1/...``) and, of the XML API, only ``GET`` and ``PUT``
of an object, without the ``ETag`` and ``Last-Modified`` headers obstore requires; every
other XML request answers 501. So obstore cannot use the emulator directly (tests/test_gcs.py
pins each of these failures).

This gateway translates every XML request into JSON API calls on the emulator, which holds
every byte. What the emulator lacks is done here, and this module answers for it:

- create-only writes (``x-goog-if-generation-match: 0``): the emulator has no preconditions,
  so the gateway checks and writes under one lock;
- multipart uploads: parts are held here and uploaded as one object on completion;
- listing pages: the emulator answers a listing in one piece;
- empty objects: the emulator's media upload fails on an empty body (``len(None)``), so
  they go up as JSON multipart uploads;
- authentication: the bearer token must be a JWT signed by the test service account;
- V4 signed URLs are verified as storage.googleapis.com would: obstore 0.12 signs the host
  ``storage.googleapis.com`` whatever the endpoint, so the gateway stands in for that host.

JSON API requests (``/storage/v1/...``, ``/upload/...``) pass through unchanged: buckets are
created through the gateway.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SIGNED_HOST = "storage.googleapis.com"
MAX_KEYS = 1000
_XML_HEAD = "<?xml version='1.0' encoding='UTF-8'?>"
_UNRESERVED = "-_.~"


class GatewayError(Exception):
    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _no_such_key() -> GatewayError:
    return GatewayError(HTTPStatus.NOT_FOUND, "NoSuchKey", "The specified key does not exist.")


def _no_such_bucket() -> GatewayError:
    return GatewayError(
        HTTPStatus.NOT_FOUND, "NoSuchBucket", "The specified bucket does not exist."
    )


def _precondition_failed() -> GatewayError:
    return GatewayError(
        HTTPStatus.PRECONDITION_FAILED,
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold.",
    )


@dataclass
class _Answer:
    status: HTTPStatus = HTTPStatus.OK
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # HEAD answers carry the object's length without its bytes.
    length: int | None = None


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class EmulatorClient:
    """The emulator's JSON API, one request at a time (it is a single-threaded server)."""

    def __init__(self, url: str) -> None:
        self._http = httpx.Client(base_url=url, timeout=120)
        self.lock = threading.RLock()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.lock:
            return self._http.request(method, path, **kwargs)

    def metadata(self, bucket: str, key: str) -> dict[str, Any] | None:
        answer = self.request("GET", f"/storage/v1/b/{_q(bucket)}/o/{_q(key)}")
        if answer.status_code == HTTPStatus.NOT_FOUND:
            if self.request("GET", f"/storage/v1/b/{_q(bucket)}").status_code == 404:
                raise _no_such_bucket()
            return None
        answer.raise_for_status()
        return dict(answer.json())

    def media(self, bucket: str, key: str) -> bytes:
        answer = self.request("GET", f"/storage/v1/b/{_q(bucket)}/o/{_q(key)}?alt=media")
        if answer.status_code == HTTPStatus.NOT_FOUND:
            raise _no_such_key()
        answer.raise_for_status()
        return answer.content

    def upload(self, bucket: str, key: str, data: bytes, content_type: str) -> dict[str, Any]:
        path = f"/upload/storage/v1/b/{_q(bucket)}/o"
        if data:
            answer = self.request(
                "POST",
                path,
                params={"uploadType": "media", "name": key},
                content=data,
                headers={"Content-Type": content_type},
            )
        else:
            boundary = "gateway-empty-object"
            body = (
                f"--{boundary}\r\nContent-Type: application/json\r\n\r\n"
                f"{json.dumps({'name': key, 'contentType': content_type})}\r\n"
                f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n\r\n--{boundary}--\r\n"
            )
            answer = self.request(
                "POST",
                path,
                params={"uploadType": "multipart"},
                content=body.encode(),
                headers={"Content-Type": f"multipart/related; boundary={boundary}"},
            )
        if answer.status_code == HTTPStatus.NOT_FOUND:
            raise _no_such_bucket()
        answer.raise_for_status()
        return dict(answer.json())

    def listing(self, bucket: str, prefix: str, delimiter: str | None) -> dict[str, Any]:
        params = {"prefix": prefix} if prefix else {}
        if delimiter:
            params["delimiter"] = delimiter
        answer = self.request("GET", f"/storage/v1/b/{_q(bucket)}/o", params=params)
        if answer.status_code == HTTPStatus.NOT_FOUND:
            raise _no_such_bucket()
        answer.raise_for_status()
        return dict(answer.json())


def _etag(meta: dict[str, Any]) -> str:
    """The XML API's ETag of a simple upload: the MD5 of the bytes, in hex, quoted."""
    return '"' + base64.b64decode(meta["md5Hash"]).hex() + '"'


def _updated(meta: dict[str, Any]) -> datetime:
    return datetime.strptime(meta["updated"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _object_headers(meta: dict[str, Any]) -> dict[str, str]:
    return {
        "ETag": _etag(meta),
        "Last-Modified": email.utils.format_datetime(_updated(meta), usegmt=True),
        "Content-Type": meta.get("contentType") or "application/octet-stream",
        "x-goog-generation": str(meta["generation"]),
        "x-goog-metageneration": str(meta["metageneration"]),
        "x-goog-hash": f"crc32c={meta['crc32c']},md5={meta['md5Hash']}",
        "x-goog-stored-content-length": str(meta["size"]),
    }


def _xml(root: str, body: str) -> bytes:
    return f'{_XML_HEAD}<{root} xmlns="http://doc.s3.amazonaws.com/2006-03-01">{body}</{root}>'.encode()


def _el(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


class SignatureChecker:
    """Bearer JWTs and V4 signed URLs, checked against the service account's public key."""

    def __init__(self, public_key: rsa.RSAPublicKey, client_email: str) -> None:
        self.public_key = public_key
        self.client_email = client_email

    def _verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True

    def check_bearer(self, authorization: str | None) -> None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        parts = token.split(".")
        if len(parts) != 3:
            raise GatewayError(HTTPStatus.UNAUTHORIZED, "AuthenticationRequired", "no token")
        header, claims, signature = (_b64url(part) for part in parts)
        claimed = json.loads(claims)
        if json.loads(header).get("alg") != "RS256" or claimed.get("iss") != self.client_email:
            raise GatewayError(HTTPStatus.UNAUTHORIZED, "InvalidToken", "not our account")
        if claimed.get("exp", 0) < time.time():
            raise GatewayError(HTTPStatus.UNAUTHORIZED, "InvalidToken", "token expired")
        if not self._verify(signature, f"{parts[0]}.{parts[1]}".encode()):
            raise GatewayError(HTTPStatus.UNAUTHORIZED, "InvalidToken", "bad token signature")

    def check_signed_url(self, method: str, raw_path: str, query: list[tuple[str, str]]) -> None:
        """https://cloud.google.com/storage/docs/authentication/signatures, for host
        storage.googleapis.com and the one signed header ``host``."""
        params = dict(query)

        def refuse(message: str) -> GatewayError:
            return GatewayError(HTTPStatus.FORBIDDEN, "SignatureDoesNotMatch", message)

        if params.get("X-Goog-Algorithm") != "GOOG4-RSA-SHA256":
            raise refuse("unknown algorithm")
        if params.get("X-Goog-SignedHeaders") != "host":
            raise refuse("only the host header may be signed")
        email_, _, scope = params.get("X-Goog-Credential", "").partition("/")
        if email_ != self.client_email:
            raise refuse("signed by another account")
        signed_at = datetime.strptime(params["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = int(params["X-Goog-Expires"])
        if not 1 <= expires <= 604800:
            raise refuse("X-Goog-Expires must be between 1 second and 7 days")
        if signed_at.timestamp() + expires < time.time():
            raise GatewayError(HTTPStatus.BAD_REQUEST, "ExpiredToken", "the URL has expired")
        canonical_query = "&".join(
            f"{urllib.parse.quote(k, safe=_UNRESERVED)}={urllib.parse.quote(v, safe=_UNRESERVED)}"
            for k, v in sorted(query)
            if k != "X-Goog-Signature"
        )
        canonical = "\n".join(
            [
                method,
                raw_path,
                canonical_query,
                f"host:{SIGNED_HOST}",
                "",
                "host",
                "UNSIGNED-PAYLOAD",
            ]
        )
        to_sign = "\n".join(
            [
                "GOOG4-RSA-SHA256",
                params["X-Goog-Date"],
                scope,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        if not self._verify(bytes.fromhex(params.get("X-Goog-Signature", "")), to_sign.encode()):
            raise refuse("the signature does not match")


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class _Upload:
    bucket: str
    key: str
    content_type: str
    parts: dict[int, bytes] = field(default_factory=dict)


class XmlGateway:
    """Answers the XML API requests obstore makes, from the emulator's JSON API."""

    def __init__(self, emulator: EmulatorClient, checker: SignatureChecker) -> None:
        self.emulator = emulator
        self.checker = checker
        self.uploads: dict[str, _Upload] = {}
        self._ids = itertools.count(1)

    def handle(
        self, method: str, raw_path: str, query: list[tuple[str, str]], headers: Any, body: bytes
    ) -> _Answer:
        segments = raw_path.lstrip("/").split("/", 1)
        bucket = urllib.parse.unquote(segments[0])
        key = urllib.parse.unquote(segments[1]) if len(segments) > 1 else ""
        params = dict(query)
        signed = "X-Goog-Signature" in params
        if signed and method in ("GET", "HEAD") and key:
            self.checker.check_signed_url(method, raw_path, query)
        else:
            self.checker.check_bearer(headers.get("Authorization"))
        if not key:
            if method == "GET" and params.get("list-type") == "2":
                return self.list(bucket, params)
            raise GatewayError(HTTPStatus.NOT_IMPLEMENTED, "NotImplemented", "bucket call")
        if method in ("GET", "HEAD"):
            if headers.get("Range") or any(h.lower().startswith("if-") for h in headers):
                raise GatewayError(HTTPStatus.NOT_IMPLEMENTED, "NotImplemented", "conditional")
            return self.get(bucket, key, head=method == "HEAD")
        if method == "PUT" and "uploadId" in params:
            return self.put_part(params["uploadId"], int(params["partNumber"]), body)
        if method == "PUT" and headers.get("x-goog-copy-source"):
            return self.copy(headers["x-goog-copy-source"], bucket, key, headers)
        if method == "PUT":
            content_type = headers.get("Content-Type") or "application/octet-stream"
            return self.put(bucket, key, body, content_type, headers)
        if method == "POST" and "uploads" in params:
            return self.start_upload(bucket, key, headers)
        if method == "POST" and "uploadId" in params:
            return self.complete_upload(params["uploadId"], body)
        if method == "DELETE" and "uploadId" in params:
            self.uploads.pop(params["uploadId"], None)
            return _Answer(HTTPStatus.NO_CONTENT)
        if method == "DELETE":
            return self.delete(bucket, key)
        raise GatewayError(HTTPStatus.NOT_IMPLEMENTED, "NotImplemented", f"{method} object")

    def get(self, bucket: str, key: str, *, head: bool) -> _Answer:
        with self.emulator.lock:
            meta = self.emulator.metadata(bucket, key)
            if meta is None:
                raise _no_such_key()
            data = b"" if head else self.emulator.media(bucket, key)
        return _Answer(headers=_object_headers(meta), body=data, length=int(meta["size"]))

    @contextmanager
    def _preconditions(self, bucket: str, key: str, headers: Any) -> Iterator[None]:
        """x-goog-if-generation-match: 0 means "only if absent", N "only generation N"."""
        wanted = headers.get("x-goog-if-generation-match")
        with self.emulator.lock:
            if wanted is not None:
                meta = self.emulator.metadata(bucket, key)
                current = "0" if meta is None else str(meta["generation"])
                if current != wanted:
                    raise _precondition_failed()
            yield

    def put(self, bucket: str, key: str, data: bytes, content_type: str, headers: Any) -> _Answer:
        with self._preconditions(bucket, key, headers):
            meta = self.emulator.upload(bucket, key, data, content_type)
        return _Answer(headers=_object_headers(meta))

    def copy(self, source: str, bucket: str, key: str, headers: Any) -> _Answer:
        source_bucket, _, source_key = urllib.parse.unquote(source).lstrip("/").partition("/")
        with self._preconditions(bucket, key, headers):
            answer = self.emulator.request(
                "POST",
                f"/storage/v1/b/{_q(source_bucket)}/o/{_q(source_key)}"
                f"/copyTo/b/{_q(bucket)}/o/{_q(key)}",
            )
        if answer.status_code == HTTPStatus.NOT_FOUND:
            raise _no_such_key()
        answer.raise_for_status()
        meta = answer.json()
        result = _el("LastModified", meta["updated"]) + _el("ETag", _etag(meta))
        return _Answer(headers=_object_headers(meta), body=_xml("CopyObjectResult", result))

    def delete(self, bucket: str, key: str) -> _Answer:
        answer = self.emulator.request("DELETE", f"/storage/v1/b/{_q(bucket)}/o/{_q(key)}")
        if answer.status_code == HTTPStatus.NOT_FOUND:
            raise _no_such_key()
        answer.raise_for_status()
        return _Answer(HTTPStatus.NO_CONTENT)

    def start_upload(self, bucket: str, key: str, headers: Any) -> _Answer:
        upload_id = f"gateway-{next(self._ids)}"
        content_type = headers.get("Content-Type") or "application/octet-stream"
        self.uploads[upload_id] = _Upload(bucket, key, content_type)
        body = _el("Bucket", bucket) + _el("Key", key) + _el("UploadId", upload_id)
        return _Answer(body=_xml("InitiateMultipartUploadResult", body))

    def put_part(self, upload_id: str, number: int, data: bytes) -> _Answer:
        upload = self.uploads.get(upload_id)
        if upload is None:
            raise GatewayError(HTTPStatus.NOT_FOUND, "NoSuchUpload", "no such upload")
        upload.parts[number] = data
        return _Answer(headers={"ETag": '"' + hashlib.md5(data).hexdigest() + '"'})

    def complete_upload(self, upload_id: str, body: bytes) -> _Answer:
        upload = self.uploads.get(upload_id)
        if upload is None:
            raise GatewayError(HTTPStatus.NOT_FOUND, "NoSuchUpload", "no such upload")
        listed = [
            (int(part.findtext("PartNumber") or 0), (part.findtext("ETag") or "").strip('"'))
            for part in ElementTree.fromstring(body).iter("Part")
        ]
        numbers = [number for number, _ in listed]
        if numbers != sorted(set(numbers)):
            raise GatewayError(HTTPStatus.BAD_REQUEST, "InvalidPartOrder", "parts out of order")
        chunks = []
        for number, etag in listed:
            data = upload.parts.get(number)
            if data is None or hashlib.md5(data).hexdigest() != etag:
                raise GatewayError(HTTPStatus.BAD_REQUEST, "InvalidPart", f"part {number}")
            chunks.append(data)
        meta = self.emulator.upload(
            upload.bucket, upload.key, b"".join(chunks), upload.content_type
        )
        del self.uploads[upload_id]
        result = (
            _el("Location", f"/{upload.bucket}/{upload.key}")
            + _el("Bucket", upload.bucket)
            + _el("Key", upload.key)
            + _el("ETag", _etag(meta))
        )
        return _Answer(
            headers={"x-goog-generation": str(meta["generation"])},
            body=_xml("CompleteMultipartUploadResult", result),
        )

    def list(self, bucket: str, params: dict[str, str]) -> _Answer:
        prefix = params.get("prefix", "")
        delimiter = params.get("delimiter") or None
        max_keys = min(int(params.get("max-keys", MAX_KEYS)), MAX_KEYS)
        after = params.get("start-after", "")
        if params.get("continuation-token"):
            after = max(after, base64.urlsafe_b64decode(params["continuation-token"]).decode())
        found = self.emulator.listing(bucket, prefix, delimiter)
        entries: list[tuple[str, dict[str, Any] | None]] = sorted(
            [(item["name"], item) for item in found.get("items") or []]
            + [(name, None) for name in found.get("prefixes") or []],
            key=lambda entry: entry[0].encode(),
        )
        entries = [entry for entry in entries if entry[0].encode() > after.encode()]
        page, rest = entries[:max_keys], entries[max_keys:]
        body = [_el("Name", bucket), _el("Prefix", prefix), _el("KeyCount", len(page))]
        body += [_el("MaxKeys", max_keys), _el("IsTruncated", str(bool(rest)).lower())]
        for name, meta in page:
            if meta is None:
                body.append(f"<CommonPrefixes>{_el('Prefix', name)}</CommonPrefixes>")
                continue
            modified = _updated(meta).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            body.append(
                "<Contents>"
                + _el("Key", name)
                + _el("Generation", meta["generation"])
                + _el("MetaGeneration", meta["metageneration"])
                + _el("LastModified", modified)
                + _el("ETag", _etag(meta))
                + _el("Size", meta["size"])
                + "</Contents>"
            )
        if rest:
            token = base64.urlsafe_b64encode(page[-1][0].encode()).decode()
            body.append(_el("NextContinuationToken", token))
        return _Answer(
            headers={"Content-Type": "application/xml; charset=UTF-8"},
            body=_xml("ListBucketResult", "".join(body)),
        )


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    length = handler.headers.get("Content-Length")
    if length is not None:
        return handler.rfile.read(int(length))
    if (handler.headers.get("Transfer-Encoding") or "").lower() != "chunked":
        return b""
    chunks = []
    while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
        chunks.append(handler.rfile.read(size))
        handler.rfile.readline()
    while handler.rfile.readline().strip():  # trailers
        pass
    return b"".join(chunks)


_JSON_API = re.compile(r"^/(storage/v1|upload/storage/v1|download/storage/v1)/")


def _handler_class(gateway: XmlGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _serve(self, method: str) -> None:
            body = _read_body(self)
            parts = urllib.parse.urlsplit(self.path)
            if _JSON_API.match(parts.path):
                self._pass_through(method, body)
                return
            query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            try:
                answer = gateway.handle(method, parts.path, query, self.headers, body)
            except GatewayError as exc:
                message = _el("Code", exc.code) + _el("Message", str(exc))
                answer = _Answer(
                    exc.status,
                    {"Content-Type": "application/xml; charset=UTF-8"},
                    f"{_XML_HEAD}<Error>{message}</Error>".encode(),
                )
            self._send(answer, head=method == "HEAD")

        def _pass_through(self, method: str, body: bytes) -> None:
            wanted = {"Content-Type": self.headers.get("Content-Type") or "application/json"}
            answer = gateway.emulator.request(method, self.path, content=body, headers=wanted)
            headers = {"Content-Type": answer.headers.get("Content-Type", "application/json")}
            self._send(_Answer(HTTPStatus(answer.status_code), headers, answer.content), head=False)

        def _send(self, answer: _Answer, *, head: bool) -> None:
            self.send_response(answer.status.value)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            length = answer.length if head and answer.length is not None else len(answer.body)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if not head:
                view = memoryview(answer.body)
                for start in range(0, len(view), 1 << 20):
                    self.wfile.write(view[start : start + (1 << 20)])

        def do_GET(self) -> None:
            self._serve("GET")

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

    return Handler


class GatewayServer:
    """The gateway on a loopback port, served by threads of this process."""

    def __init__(self, emulator_url: str, public_key: rsa.RSAPublicKey, client_email: str) -> None:
        self.emulator = EmulatorClient(emulator_url)
        self.gateway = XmlGateway(self.emulator, SignatureChecker(public_key, client_email))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self.gateway))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> GatewayServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.emulator.close()
