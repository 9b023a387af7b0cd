"""One WebSocket connection that streams frames: parsing, limits, backpressure, replies.

Shared by ``/ws/realtime`` and ``/ws/session``. A reader task takes messages off
the socket as fast as they come; a worker task analyses frames one at a time.
Between them is a single slot: when frames arrive faster than they are
analysed, the newest frame replaces the one waiting, and the replaced one is
counted as dropped, so memory per connection stays bounded (one frame being
analysed, one waiting) and replies never lag behind the camera.

Messages are JSON ``{"type", "data", "options", "request_id"}`` (``data``: a
base64 image) or binary (the image bytes, analysed as the connection's current
stream type). Malformed messages, non-images, oversized frames and going over
the per-connection rate get an ``{"type": "error", "code", ...}`` message; the
socket stays open. A connection that sends nothing for ``idle_timeout_s`` is
closed with code 4408.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from facesocial.errors import FaceSocialError

log = logging.getLogger(__name__)

# close codes (RFC 6455 and the 4000-4999 application range)
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008  # bad or missing credentials
CLOSE_TRY_LATER = 1013  # system_full
CLOSE_BLOCKED = 4003  # client blocked
CLOSE_IDLE = 4408
CLOSE_REPLACED = 4409  # the same client opened a newer session


@dataclass(frozen=True, slots=True)
class Inbound:
    """A frame (or a frameless request) taken off the socket."""

    type: str
    data: bytes | None
    options: dict[str, Any]
    request_id: str | None
    received: float  # time.monotonic()
    seq: int


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class TokenBucket:
    """``rate`` messages per second with bursts of ``burst``; the clock is injectable."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic,
                 ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.at = burst, clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def decode_b64(value: Any, request_id: str | None) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError("malformed_message", "'data' must be a base64 string", request_id)
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("malformed_message", "'data' is not valid base64",
                            request_id) from None


@dataclass
class Limits:
    max_frame_bytes: int
    rate_per_s: float
    burst: float
    idle_timeout_s: float


@dataclass
class FrameConnection:
    """Drives one accepted WebSocket until it closes."""

    ws: WebSocket
    limits: Limits
    frame_types: frozenset[str]  # types that carry a frame (analysed by the worker)
    default_type: str
    immediate: dict[str, Callable[[Inbound], Awaitable[dict[str, Any]]]] = field(
        default_factory=dict)  # frameless types answered by the reader at once
    received: int = 0
    dropped: int = 0
    analysed: int = 0
    errors: int = 0
    _slot: Inbound | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closed: bool = False
    _close: tuple[int, str] | None = None
    _last_rate_error: float = 0.0

    # ------------------------------------------------------------ sending
    async def send(self, message: dict[str, Any]) -> None:
        if self._closed:
            return
        async with self._send_lock:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                if self.ws.client_state == WebSocketState.CONNECTED:
                    await self.ws.send_text(json.dumps(message, separators=(",", ":")))

    async def error(self, code: str, message: str, request_id: str | None = None,
                    **details: Any) -> None:
        self.errors += 1
        await self.send({"type": "error", "code": code, "message": message,
                         "request_id": request_id, **({"details": details} if details else {})})

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (from any task); the loops end."""
        if self._closed:
            return
        self._closed = True
        self._close = (code, reason)
        self._ready.set()
        async with self._send_lock:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                if self.ws.client_state == WebSocketState.CONNECTED:
                    await self.ws.close(code, reason[:120])

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------ reading
    async def receive(self, timeout: float | None = None) -> dict[str, Any] | bytes | None:
        """The next message: a parsed JSON object, raw bytes, or None when the peer left.
        Raises ProtocolError for JSON that is not an object, TimeoutError when idle."""
        msg = await asyncio.wait_for(self.ws.receive(), timeout or self.limits.idle_timeout_s)
        if msg["type"] == "websocket.disconnect":
            return None
        if msg.get("bytes") is not None:
            return msg["bytes"]  # type: ignore[no-any-return]
        text = msg.get("text") or ""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProtocolError("malformed_message", f"not valid JSON: {exc.msg}") from None
        if not isinstance(doc, dict):
            raise ProtocolError("malformed_message", "a message must be a JSON object")
        return doc

    def parse(self, raw: dict[str, Any] | bytes) -> Inbound:
        self.received += 1
        now = time.monotonic()
        if isinstance(raw, bytes):
            if len(raw) > self.limits.max_frame_bytes:
                raise ProtocolError("payload_too_large", f"the frame is {len(raw)} bytes; the "
                                    f"limit is {self.limits.max_frame_bytes}")
            return Inbound(self.default_type, raw, {}, None, now, self.received)
        rid = raw.get("request_id")
        if rid is not None and not isinstance(rid, (str, int)):
            raise ProtocolError("malformed_message", "'request_id' must be a string or number")
        rid = None if rid is None else str(rid)[:128]
        kind = raw.get("type")
        if not isinstance(kind, str):
            raise ProtocolError("malformed_message", "'type' is missing", rid)
        options = raw.get("options") or {}
        if not isinstance(options, dict):
            raise ProtocolError("malformed_message", "'options' must be an object", rid)
        if kind in self.immediate:
            return Inbound(kind, None, options, rid, now, self.received)
        if kind not in self.frame_types:
            raise ProtocolError("unknown_type", f"unknown message type '{kind[:64]}'; types: "
                                + ", ".join(sorted(self.frame_types | set(self.immediate))), rid)
        data = raw.get("data")
        if data is None:
            # a frameless message of a frame type sets the type used for binary frames
            self.default_type = kind
            return Inbound(kind, None, options, rid, now, self.received)
        if isinstance(data, str) and len(data) > self.limits.max_frame_bytes * 4 // 3 + 8:
            raise ProtocolError("payload_too_large", f"the frame is larger than "
                                f"{self.limits.max_frame_bytes} bytes", rid)
        frame = decode_b64(data, rid)
        self.default_type = kind
        return Inbound(kind, frame, options, rid, now, self.received)

    # --------------------------------------------------------------- loops
    async def run(self, analyse: Callable[[Inbound], Awaitable[dict[str, Any] | None]]) -> None:
        """Read and analyse until the peer leaves, the socket idles out or close() is called."""
        bucket = TokenBucket(self.limits.rate_per_s, self.limits.burst)
        worker = asyncio.create_task(self._work(analyse))
        try:
            await self._read(bucket)
        finally:
            self._ready.set()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker

    async def _read(self, bucket: TokenBucket) -> None:
        while not self._closed:
            try:
                raw = await self.receive()
            except TimeoutError:
                await self.close(CLOSE_IDLE, "idle_timeout")
                return
            except ProtocolError as exc:
                await self.error(exc.code, exc.message, exc.request_id)
                continue
            except (WebSocketDisconnect, RuntimeError):
                return
            if raw is None:
                return
            if not bucket.take():
                now = time.monotonic()
                self.dropped += 1
                if now - self._last_rate_error >= 1.0:  # say it once a second, not per frame
                    self._last_rate_error = now
                    await self.error("rate_limited", f"more than {self.limits.rate_per_s:g} "
                                     "messages per second; frames are being dropped",
                                     raw.get("request_id") if isinstance(raw, dict) else None)
                continue
            try:
                inbound = self.parse(raw)
            except ProtocolError as exc:
                await self.error(exc.code, exc.message, exc.request_id)
                continue
            if inbound.type in self.immediate:
                await self.send(await self.immediate[inbound.type](inbound))
            elif inbound.data is not None:
                if self._slot is not None:
                    self.dropped += 1  # the newest frame wins
                self._slot = inbound
                self._ready.set()

    async def _work(self, analyse: Callable[[Inbound], Awaitable[dict[str, Any] | None]],
                    ) -> None:
        while not self._closed:
            await self._ready.wait()
            self._ready.clear()
            inbound, self._slot = self._slot, None
            if inbound is None or self._closed:
                continue
            try:
                reply = await analyse(inbound)
            except ProtocolError as exc:
                await self.error(exc.code, exc.message, exc.request_id or inbound.request_id)
                continue
            except FaceSocialError as exc:  # a bad frame (not an image, too small, ...)
                await self.error(exc.code, exc.message, inbound.request_id,
                                 **{k: v for k, v in exc.details.items()
                                    if isinstance(v, (str, int, float, bool))})
                continue
            except Exception:  # noqa: BLE001 - one frame's bug must not end the stream
                log.exception("frame %d could not be analysed", inbound.seq)
                await self.error("internal_error", "the frame could not be analysed",
                                 inbound.request_id)
                continue
            self.analysed += 1
            if reply is not None:
                await self.send(reply)

    def stats(self) -> dict[str, int]:
        return {"received": self.received, "analysed": self.analysed, "dropped": self.dropped,
                "errors": self.errors}
