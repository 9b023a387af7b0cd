"""Administration of continuous-authentication clients, live sessions and decisions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from facesocial.api.deps import AppState, Principal, app_state, require
from facesocial.db.models import SessionDecision
from facesocial.errors import NotFound

router = APIRouter(prefix="/sessions", tags=["sessions"])
MAX_OFFSET = 1_000_000_000


class ClientIn(BaseModel):
    client_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$")
    name: str = Field(default="", max_length=256)
    identity_id: str = Field(min_length=1, max_length=32)


class StateChange(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


@router.post("/clients", status_code=201)
def create_client(body: ClientIn, state: AppState = Depends(app_state),
                  principal: Principal = Depends(require("admin"))) -> dict[str, Any]:
    """Register a client bound to an enrolled identity. The answer holds the client's own
    API key, shown once: the client connects to /ws/session with its id and this key."""
    return state.auth_sessions.create_client(  # type: ignore[no-any-return]
        body.client_id, body.name or body.client_id, body.identity_id, principal.id)


@router.get("/clients")
def list_clients(offset: int = Query(0, ge=0, le=MAX_OFFSET), limit: int = Query(50, ge=1, le=200),
                 client_state: str | None = Query(None, alias="state",
                                                  pattern="^(active|paused|blocked)$"),
                 state: AppState = Depends(app_state),
                 _: Principal = Depends(require("admin"))) -> dict[str, Any]:
    return state.auth_sessions.list_clients(offset, limit,  # type: ignore[no-any-return]
                                            client_state)


@router.get("/clients/{client_id}")
def get_client(client_id: str, state: AppState = Depends(app_state),
               _: Principal = Depends(require("admin"))) -> dict[str, Any]:
    return state.auth_sessions.get_client(client_id)  # type: ignore[no-any-return]


def _set(state: AppState, client_id: str, new: str, body: StateChange,
         principal: Principal) -> dict[str, Any]:
    return state.auth_sessions.set_state(client_id, new,  # type: ignore[no-any-return]
                                         body.reason, principal.id)


@router.post("/clients/{client_id}/block")
async def block(client_id: str, body: StateChange, state: AppState = Depends(app_state),
                principal: Principal = Depends(require("admin"))) -> dict[str, Any]:
    """Refused at connect from now on; its live sessions (in any process) are closed."""
    return await run_in_threadpool(_set, state, client_id, "blocked", body, principal)


@router.post("/clients/{client_id}/pause")
async def pause(client_id: str, body: StateChange, state: AppState = Depends(app_state),
                principal: Principal = Depends(require("admin"))) -> dict[str, Any]:
    """Monitoring paused: its sessions stay connected, frames are not judged."""
    return await run_in_threadpool(_set, state, client_id, "paused", body, principal)


@router.post("/clients/{client_id}/unblock")
async def unblock(client_id: str, body: StateChange, state: AppState = Depends(app_state),
                  principal: Principal = Depends(require("admin"))) -> dict[str, Any]:
    """Back to active (from blocked or paused)."""
    return await run_in_threadpool(_set, state, client_id, "active", body, principal)


@router.get("/live")
def live(state: AppState = Depends(app_state),
         _: Principal = Depends(require("admin"))) -> dict[str, Any]:
    """Live sessions across API processes (Redis) or in this one."""
    items = state.auth_sessions.live()
    return {"items": items, "total": len(items)}


@router.get("/status")
def status(state: AppState = Depends(app_state),
           _: Principal = Depends(require("admin"))) -> dict[str, Any]:
    """This process: pipelines, places, queue, its sessions, the policy version."""
    return state.auth_sessions.status()  # type: ignore[no-any-return]


@router.get("/decisions")
def decisions(client_id: str | None = Query(None, max_length=64),
              offset: int = Query(0, ge=0, le=MAX_OFFSET), limit: int = Query(50, ge=1, le=500),
              state: AppState = Depends(app_state),
              _: Principal = Depends(require("admin"))) -> dict[str, Any]:
    """The audit trail of non-allow decisions, newest first."""
    return state.auth_sessions.decisions(client_id, offset, limit)  # type: ignore[no-any-return]


@router.get("/decisions/{decision_id}/evidence")
def evidence(decision_id: str, part: str = Query("frame", pattern="^(frame|record)$"),
             state: AppState = Depends(app_state),
             _: Principal = Depends(require("admin"))) -> FileResponse:
    """The decision's evidence: the frame (JPEG) or its JSON record."""
    with state.session() as s:
        row = s.get(SessionDecision, decision_id) if len(decision_id) <= 32 else None
        path = row.evidence if row is not None else None
    if not path:
        raise NotFound(f"no evidence for decision '{decision_id[:64]}'", resource="evidence")
    jpg, rec = state.auth_sessions.evidence.files(path)
    target = jpg if part == "frame" else rec
    if not target.is_file():
        raise NotFound("the evidence was removed (retention)", resource="evidence")
    return FileResponse(target, media_type="image/jpeg" if part == "frame"
                        else "application/json")
