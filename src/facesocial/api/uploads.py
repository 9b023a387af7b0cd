"""Request bodies that carry images: multipart uploads or JSON with base64 strings.

Bodies are read with a byte limit before anything is parsed, so an oversized
upload is refused (413) without being buffered whole.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from facesocial.errors import MalformedRequest, MissingImage, PayloadTooLarge, UnsupportedMediaType

# multipart framing and base64 (4/3) overhead on top of the image limit
_OVERHEAD = 64 * 1024


@dataclass
class Upload:
    images: dict[str, bytes] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)

    def image(self, name: str = "image") -> bytes:
        if name not in self.images:
            raise MissingImage(f"the request has no '{name}' image (multipart file field or "
                               f"base64 JSON field '{name}')", field=name)
        return self.images[name]


def _limit(max_bytes: int, content_type: str) -> int:
    if content_type.startswith("application/json"):
        return max_bytes * 4 // 3 + _OVERHEAD
    return max_bytes + _OVERHEAD


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {limit}",
                              limit=limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body exceeds {limit} bytes", limit=limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # noqa: SLF001 - lets starlette's form parser reuse what we read
    return body


def _decode_b64(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise MalformedRequest(f"'{name}' must be a base64 string", field=name)
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequest(f"'{name}' is not valid base64", field=name) from None


def _within(name: str, data: bytes, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"'{name}' is {len(data)} bytes; the limit is {max_bytes}",
                              field=name, limit=max_bytes)
    return data


async def read_upload(request: Request, max_bytes: int,
                      image_fields: tuple[str, ...] = ("image",)) -> Upload:
    """Images (by field name) and the other fields of a multipart or JSON body."""
    ctype = request.headers.get("content-type", "").lower()
    body = await _read_body(request, _limit(max_bytes, ctype))
    up = Upload()
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=len(image_fields) + 8, max_fields=64,
                                      max_part_size=max_bytes + _OVERHEAD)
        except Exception as exc:  # noqa: BLE001 - starlette raises several untyped errors
            raise MalformedRequest(f"the multipart body could not be parsed: {exc}") from None
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key in image_fields and key not in up.images:
                    up.images[key] = _within(key, await value.read(), max_bytes)
            else:
                up.fields[key] = value
        return up
    if ctype.startswith("application/json"):
        try:
            doc = json.loads(body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedRequest(f"the JSON body is malformed: {exc}") from None
        if not isinstance(doc, dict):
            raise MalformedRequest("the JSON body must be an object")
        for key, value in doc.items():
            if key in image_fields:
                up.images[key] = _within(key, _decode_b64(key, value), max_bytes)
            else:
                up.fields[key] = value
        return up
    raise UnsupportedMediaType("send multipart/form-data (file fields) or application/json "
                               "(base64 fields)", content_type=ctype or None)


def image_body_schema(image_fields: tuple[str, ...], extra: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI requestBody for endpoints that accept multipart or base64 JSON."""
    multipart = {name: {"type": "string", "format": "binary"} for name in image_fields}
    js = {name: {"type": "string", "format": "byte"} for name in image_fields}
    props_mp = {**multipart, **{k: {"type": "string"} for k in extra}}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": props_mp,
                                           "required": list(image_fields)}},
        "application/json": {"schema": {"type": "object", "properties": {**js, **extra},
                                        "required": list(image_fields)}},
    }}}


def int_field(fields: dict[str, Any], name: str, lo: int = 0, hi: int = 100_000) -> int | None:
    """An optional integer form/JSON field, validated (400 malformed_request otherwise)."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise MalformedRequest(f"'{name}' must be an integer", field=name)
    try:
        number = int(value)
    except ValueError:
        raise MalformedRequest(f"'{name}' must be an integer", field=name) from None
    if not lo <= number <= hi:
        raise MalformedRequest(f"'{name}' must be in {lo}..{hi}", field=name)
    return number


def str_field(fields: dict[str, Any], name: str, max_len: int = 64) -> str | None:
    """An optional short string field such as a model id."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise MalformedRequest(f"'{name}' must be a string of at most {max_len} characters",
                               field=name)
    return value


def bool_field(fields: dict[str, Any], name: str) -> bool:
    value = fields.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no", ""):
        return value.lower() in ("1", "true", "yes")
    raise MalformedRequest(f"'{name}' must be a boolean", field=name)


@dataclass
class FileUpload:
    """A multipart body parsed as it streams in: files spooled to temporary files (not
    memory), plain fields as strings. Close it to delete the temporary files."""

    files: dict[str, list[UploadFile]] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for files in self.files.values():
            for f in files:
                f.file.close()


async def read_file_upload(request: Request, max_bytes: int, file_fields: tuple[str, ...],
                           max_files: int) -> FileUpload:
    """Parse a large multipart body (batch jobs, videos) without holding it in memory; the
    whole body may be at most ``max_bytes`` (413 ``payload_too_large`` as soon as it is not).
    """
    from starlette.formparsers import MultiPartException, MultiPartParser

    ctype = request.headers.get("content-type", "").lower()
    if not ctype.startswith("multipart/form-data"):
        raise UnsupportedMediaType("send the files as multipart/form-data",
                                   content_type=ctype or None)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {max_bytes}",
                              limit=max_bytes)

    async def limited() -> Any:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"the request body exceeds {max_bytes} bytes",
                                      limit=max_bytes)
            yield chunk

    parser = MultiPartParser(request.headers, limited(), max_files=max_files, max_fields=64,
                             max_part_size=64 * 1024)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise MalformedRequest(f"the multipart body could not be parsed: {exc}") from None
    up = FileUpload()
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key in file_fields:
                up.files.setdefault(key, []).append(value)
            else:
                value.file.close()
        else:
            up.fields[key] = value
    return up
