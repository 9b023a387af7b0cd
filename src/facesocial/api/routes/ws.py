"""WebSocket endpoints: ``/ws/realtime`` (live analysis) and ``/ws/session`` (continuous
authentication).

Credentials go in the URL (``?token=`` an access token or ``?api_key=``; sessions add
``?client_id=``) or in the first message, ``{"type": "auth", ...}`` with the same
fields, within ``ws_auth_timeout_s``. Bad credentials close the socket with 1008
(policy violation) and the reason's code; a blocked client gets 4003, a session replaced by
the same client's newer one 4409.

``/ws/realtime`` message types: ``face_detection_stream``, ``face_recognition_stream``,
``antispoof_stream`` (each with a base64 ``data`` frame; a binary message is a frame of
the last type used, or of ``?stream=``), ``system_status_stream`` and ``ping``. Every
reply echoes ``request_id`` and names the models used.

``/ws/session`` takes frames (binary, or ``{"type": "frame", "data": ...}``) and answers
each analysed frame with a ``decision`` message (see :mod:`facesocial.sessions`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.concurrency import run_in_threadpool

from facesocial.api.deps import AppState, authenticate_credentials
from facesocial.errors import (
    ClientBlocked,
    FaceSocialError,
    InsufficientScope,
    NoGalleryForModel,
    SystemFull,
)
from facesocial.realtime.connection import (
    CLOSE_BLOCKED,
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    FrameConnection,
    Inbound,
    Limits,
    ProtocolError,
)

router = APIRouter(tags=["realtime"])

STREAMS = {"face_detection_stream": ("detect",),
           "face_recognition_stream": ("detect", "embed"),
           "antispoof_stream": ("detect", "antispoof")}
CLOSE_NOT_ENROLLED = 4009


def _limits(state: AppState) -> Limits:
    s = state.settings
    return Limits(max_frame_bytes=s.ws_max_frame_bytes, rate_per_s=s.ws_rate_per_s,
                  burst=s.ws_rate_per_s, idle_timeout_s=s.ws_idle_timeout_s)


async def _credentials(ws: WebSocket, conn: FrameConnection, fields: tuple[str, ...],
                       timeout: float) -> dict[str, str] | None:
    """Credentials from the URL, else from a first ``auth`` message; None if none came."""
    got = {f: ws.query_params[f] for f in fields if ws.query_params.get(f)}
    if got.get("token") or got.get("api_key"):
        return got
    try:
        first = await conn.receive(timeout)
    except (TimeoutError, ProtocolError):
        return None
    if not isinstance(first, dict) or first.get("type") != "auth":
        return None
    return {f: first[f] for f in fields if isinstance(first.get(f), str)} | got


def _code(exc: FaceSocialError) -> str:
    return str(getattr(exc, "subcode", "") or exc.code)


async def _ping(inb: Inbound) -> dict[str, Any]:
    return {"type": "pong", "request_id": inb.request_id, "t": time.time()}


@router.websocket("/ws/realtime")
async def realtime(ws: WebSocket) -> None:
    state: AppState = ws.app.state.fs
    await ws.accept()
    default = ws.query_params.get("stream", "face_detection_stream")
    if default not in STREAMS:
        await ws.close(CLOSE_POLICY, "unknown stream type")
        return

    async def status(inb: Inbound) -> dict[str, Any]:
        manager = state.engine.manager
        models = [{k: m[k] for k in ("id", "state", "device", "version", "hits")}
                  for m in await run_in_threadpool(manager.status)]
        return {"type": "system_status_stream_result", "request_id": inb.request_id,
                "models": models, "vram": await run_in_threadpool(manager.vram),
                "sessions": state.auth_sessions.pool.status(), "connection": conn.stats()}

    conn = FrameConnection(ws, _limits(state), frame_types=frozenset(STREAMS),
                           default_type=default,
                           immediate={"system_status_stream": status, "ping": _ping})
    creds = await _credentials(ws, conn, ("token", "api_key"), state.settings.ws_auth_timeout_s)
    if creds is None:
        await conn.close(CLOSE_POLICY, "unauthorized: send a token or an API key")
        return
    try:
        principal = await run_in_threadpool(authenticate_credentials, state,
                                            api_key=creds.get("api_key"),
                                            token=creds.get("token"))
        if not principal.allows("face"):
            raise InsufficientScope("realtime streams need the 'face' scope", scope="face")
    except FaceSocialError as exc:
        await conn.close(CLOSE_POLICY, _code(exc))
        return
    await conn.send({"type": "ready", "streams": sorted(STREAMS), "default": default,
                     "max_frame_bytes": state.settings.ws_max_frame_bytes})

    async def analyse(inb: Inbound) -> dict[str, Any]:
        opts = _options(inb)
        t0 = time.monotonic()
        result = await run_in_threadpool(_analyse_frame, state, inb, opts)
        return {"type": f"{inb.type}_result", "request_id": inb.request_id, "frame": inb.seq,
                **result, "dropped": conn.dropped,
                "latency_ms": round((time.monotonic() - inb.received) * 1000, 1),
                "analysis_ms": round((time.monotonic() - t0) * 1000, 1)}

    await conn.run(analyse)


def _options(inb: Inbound) -> dict[str, Any]:
    o = inb.options
    out: dict[str, Any] = {}
    for name in ("detector", "embedder"):
        if o.get(name) is not None:
            if not isinstance(o[name], str) or len(o[name]) > 64:
                raise ProtocolError("malformed_message", f"'{name}' must be a model id",
                                    inb.request_id)
            out[name] = o[name]
    for name, lo, hi in (("min_face_size", 0, 10_000), ("max_faces", 0, 1000),
                         ("top_k", 1, 50)):
        v = o.get(name)
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ProtocolError("malformed_message", f"'{name}' must be an integer in "
                                    f"{lo}..{hi}", inb.request_id)
            out[name] = v
    return out


def _analyse_frame(state: AppState, inb: Inbound, opts: dict[str, Any]) -> dict[str, Any]:
    engine = state.engine
    analysis = engine.analyze(inb.data or b"", STREAMS[inb.type], detector=opts.get("detector"),
                              embedder=opts.get("embedder"),
                              min_face_size=opts.get("min_face_size"),
                              max_faces=opts.get("max_faces"))
    out = {"faces": [f.to_dict() for f in analysis.faces], "models": analysis.models(),
           "width": analysis.width, "height": analysis.height}
    if inb.type == "face_recognition_stream" and analysis.faces:
        embeddings = [f.embedding for f in analysis.faces if f.embedding is not None]
        try:
            rec = state.gallery.recognize(embeddings, k=opts.get("top_k"))
            out["recognition"] = rec.to_dict()
        except NoGalleryForModel as exc:
            out["recognition"] = {"error": exc.to_dict()}
    return out


@router.websocket("/ws/session")
async def session(ws: WebSocket) -> None:
    state: AppState = ws.app.state.fs
    svc = state.auth_sessions
    await ws.accept()
    conn = FrameConnection(ws, _limits(state), frame_types=frozenset({"frame"}),
                           default_type="frame", immediate={"ping": _ping})
    creds = await _credentials(ws, conn, ("client_id", "api_key"),
                               state.settings.ws_auth_timeout_s)
    if not creds or not creds.get("client_id") or not creds.get("api_key"):
        await conn.close(CLOSE_POLICY, "unauthorized: send client_id and api_key")
        return
    try:
        client, ref = await run_in_threadpool(svc.authenticate, creds["client_id"],
                                              creds["api_key"])
    except ClientBlocked as exc:
        await conn.send({"type": "blocked", "client_id": creds["client_id"],
                         "reason": exc.details.get("reason")})
        await conn.close(CLOSE_BLOCKED, "client_blocked")
        return
    except NoGalleryForModel as exc:
        await conn.error(exc.code, exc.message)
        await conn.close(CLOSE_NOT_ENROLLED, exc.code)
        return
    except FaceSocialError as exc:
        await conn.close(CLOSE_POLICY, _code(exc))
        return
    try:
        live = await svc.open(client, ref, conn)
    except SystemFull as exc:
        await conn.error(exc.code, exc.message)
        await conn.close(CLOSE_TRY_LATER, exc.code)
        return
    except asyncio.CancelledError:
        raise
    try:
        await conn.send({"type": "session", "session_id": live.id, "client_id": client.id,
                         "identity_id": client.identity_id, "state": client.state,
                         "policy_version": svc.policy.version, "pipeline": live.pipeline.index,
                         "devices": live.pipeline.devices,
                         "reference": {"model": ref.model.to_dict(), "faces": len(ref.vectors),
                                       "threshold": ref.threshold}})
        await conn.run(lambda inb: svc.analyse(live, inb))
    finally:
        await svc.close(live)
