"""/system: liveness, readiness, metrics, and the model manager's view and controls."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from facesocial.api.deps import AppState, Principal, app_state, require
from facesocial.errors import MalformedRequest
from facesocial.observability.metrics import render

router = APIRouter(prefix="/system", tags=["system"])


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
def ready(state: AppState = Depends(app_state)) -> JSONResponse:
    """Readiness: database, Redis (when configured) and the critical models."""
    checks = state.readiness()
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse({"status": "ready" if ok else "not_ready", "checks": checks},
                        status_code=200 if ok else 503)


@router.get("/metrics")
def metrics(state: AppState = Depends(app_state),
            _: Principal = Depends(require())) -> Response:
    """Prometheus text: HTTP requests, latencies, errors, and the model manager's metrics."""
    body = render(state.http_metrics.registry, state.engine.manager.metrics.registry)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/models")
def models(state: AppState = Depends(app_state),
           _: Principal = Depends(require())) -> dict[str, Any]:
    """Every model the manager has seen: zone, device, memory, state, hits, fallbacks."""
    return {"models": state.engine.manager.status()}


@router.get("/vram")
def vram(state: AppState = Depends(app_state),
         _: Principal = Depends(require())) -> dict[str, Any]:
    """Device and CPU memory by zone."""
    return state.engine.manager.vram()


class ModelAction(BaseModel):
    action: str = Field(pattern="^(load|unload|pin|unpin|reload|optimize)$")
    device: str | None = Field(default=None, pattern="^(cpu|any)$")


@router.get("/audit")
def audit(action: str | None = Query(None, max_length=64),
          target: str | None = Query(None, max_length=160),
          actor: str | None = Query(None, max_length=160),
          limit: int = Query(100, ge=1, le=1000), state: AppState = Depends(app_state),
          _: Principal = Depends(require("admin"))) -> dict[str, Any]:
    """The audit trail (admin actions, logins, enrolments, session blocks), newest first."""
    from facesocial.security.audit import list_events

    with state.session() as session:
        rows = list_events(session, action=action, target=target, actor=actor, limit=limit)
        items = [{"at": r.at.isoformat(), "actor": r.actor, "action": r.action,
                  "target": r.target, "outcome": r.outcome, "request_id": r.request_id,
                  "details": r.details} for r in rows]
    return {"items": items}


@router.get("/jobs")
def jobs(state: AppState = Depends(app_state),
         _: Principal = Depends(require("admin"))) -> dict[str, Any]:
    """The job executor: embedded threads (queued, busy) or the Celery queue's depth."""
    return state.jobs.describe()  # type: ignore[no-any-return]


@router.post("/models/{model_id}")
async def control(model_id: str, body: ModelAction, state: AppState = Depends(app_state),
                  principal: Principal = Depends(require("admin"))) -> dict[str, Any]:
    """Admins load, unload, pin, unpin or reload a model (or re-pack with `optimize`)."""
    manager = state.engine.manager
    state.engine.catalog.get(model_id)  # 404 for an unknown model
    if body.action == "load":
        if not state.engine.store.is_installed(model_id):
            raise MalformedRequest(f"model '{model_id}' is not installed", model=model_id)
        result: Any = await run_in_threadpool(manager.load, model_id, body.device)
    elif body.action == "optimize":
        result = await run_in_threadpool(manager.optimize)
    else:
        result = await run_in_threadpool(getattr(manager, body.action), model_id)
    state.audit(f"model.{body.action}", principal, model_id, {})
    return {"result": result}
