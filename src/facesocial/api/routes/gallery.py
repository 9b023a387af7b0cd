"""/gallery: identities, enrolment (embeddings only, never images), faces, search."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from facesocial.api.deps import AppState, Principal, app_state, require
from facesocial.api.uploads import bool_field, image_body_schema, int_field, read_upload, str_field
from facesocial.errors import (
    FaceSocialError,
    MalformedRequest,
    MissingImage,
    NotFound,
)
from facesocial.gallery import repository as repo
from facesocial.gallery.enrolment import enrolment_candidate
from facesocial.gallery.service import EnrolItem
from facesocial.results import Embedding
from facesocial.runtime import ModelRef

router = APIRouter(prefix="/gallery", tags=["gallery"])
MAX_ENROL_IMAGES = 10
MAX_OFFSET = 1_000_000_000  # database integers; deeper paging is not a real use


class IdentityIn(BaseModel):
    name: str = Field(min_length=1, max_length=256)
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=64)


class IdentityPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=256)
    metadata: dict[str, str | int | float | bool] | None = Field(default=None, max_length=64)


class IdentityOut(BaseModel):
    id: str
    name: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    face_count: int


class FaceOut(BaseModel):
    id: str
    identity_id: str
    model_id: str
    model_version: str
    dim: int
    quality: float | None
    created_at: datetime


class EmbeddingSearch(BaseModel):
    embedding: list[float] = Field(min_length=8, max_length=4096)
    model_id: str = Field(min_length=1, max_length=64)
    model_version: str = Field(min_length=1, max_length=64)
    top_k: int = Field(default=5, ge=1, le=50)


def _identity_out(row: Any, count: int) -> IdentityOut:
    return IdentityOut(id=row.id, name=row.name, metadata=dict(row.meta or {}),
                       created_at=row.created_at, updated_at=row.updated_at, face_count=count)


def _face_out(row: Any) -> FaceOut:
    return FaceOut(id=row.id, identity_id=row.identity_id, model_id=row.model_id,
                   model_version=row.model_version, dim=row.dim, quality=row.quality,
                   created_at=row.created_at)


@router.post("/identities", response_model=IdentityOut, status_code=201)
def create_identity(body: IdentityIn, state: AppState = Depends(app_state),
                    principal: Principal = Depends(require("gallery"))) -> IdentityOut:
    with state.session() as session:
        row = repo.create_identity(session, body.name, body.metadata)
        session.commit()
        out = _identity_out(row, 0)
    state.audit("gallery.identity.create", principal, out.id, {"name": body.name})
    return out


@router.get("/identities")
def list_identities(offset: int = Query(0, ge=0, le=MAX_OFFSET),
                    limit: int = Query(50, ge=1, le=200),
                    name: str | None = Query(None, max_length=256),
                    meta: list[str] = Query(default_factory=list,
                                            description="key=value filters"),
                    state: AppState = Depends(app_state),
                    _: Principal = Depends(require("gallery"))) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for item in meta:
        if "=" not in item:
            raise MalformedRequest("meta filters look like key=value", field="meta")
        key, value = item.split("=", 1)
        filters[key] = value
    with state.session() as session:
        page = repo.list_identities(session, offset=offset, limit=limit, name_contains=name,
                                    meta=filters or None)
        counts = repo.face_counts(session, [i.id for i in page.items])
        items = [_identity_out(i, counts.get(i.id, 0)) for i in page.items]
    return {"items": items, "total": page.total, "offset": page.offset, "limit": page.limit}


@router.get("/identities/{identity_id}", response_model=IdentityOut)
def get_identity(identity_id: str, state: AppState = Depends(app_state),
                 _: Principal = Depends(require("gallery"))) -> IdentityOut:
    with state.session() as session:
        row = repo.get_identity(session, identity_id)
        return _identity_out(row, repo.face_counts(session, [row.id]).get(row.id, 0))


@router.patch("/identities/{identity_id}", response_model=IdentityOut)
def update_identity(identity_id: str, body: IdentityPatch, state: AppState = Depends(app_state),
                    principal: Principal = Depends(require("gallery"))) -> IdentityOut:
    with state.session() as session:
        row = repo.update_identity(session, identity_id, name=body.name, meta=body.metadata)
        session.commit()
        out = _identity_out(row, repo.face_counts(session, [row.id]).get(row.id, 0))
    state.audit("gallery.identity.update", principal, identity_id, {})
    return out


@router.delete("/identities/{identity_id}")
def delete_identity(identity_id: str, state: AppState = Depends(app_state),
                    principal: Principal = Depends(require("gallery"))) -> dict[str, Any]:
    removed = state.gallery.delete_identity(identity_id)
    state.audit("gallery.identity.delete", principal, identity_id, {"faces": removed})
    return {"deleted": identity_id, "faces_removed": removed}


@router.get("/identities/{identity_id}/faces")
def list_faces(identity_id: str, offset: int = Query(0, ge=0, le=MAX_OFFSET),
               limit: int = Query(50, ge=1, le=200), state: AppState = Depends(app_state),
               _: Principal = Depends(require("gallery"))) -> dict[str, Any]:
    with state.session() as session:
        repo.get_identity(session, identity_id)
        page = repo.list_faces(session, identity_id=identity_id, offset=offset, limit=limit)
        return {"items": [_face_out(f) for f in page.items], "total": page.total,
                "offset": page.offset, "limit": page.limit}


@router.delete("/identities/{identity_id}/faces/{face_id}")
def delete_face(identity_id: str, face_id: str, state: AppState = Depends(app_state),
                principal: Principal = Depends(require("gallery"))) -> dict[str, Any]:
    with state.session() as session:
        face = repo.get_face(session, face_id)
        if face.identity_id != identity_id:
            raise NotFound(f"identity '{identity_id}' has no face '{face_id}'")
    state.gallery.delete_face(face_id)
    state.audit("gallery.face.delete", principal, face_id, {"identity_id": identity_id})
    return {"deleted": face_id}


@router.post("/identities/{identity_id}/faces", status_code=201, openapi_extra=image_body_schema(
    ("image",), {"images": {"type": "array", "items": {"type": "string", "format": "byte"}},
                 "waive_liveness": {"type": "boolean"}, "embedder": {"type": "string"}}))
async def enrol(identity_id: str, request: Request, state: AppState = Depends(app_state),
                principal: Principal = Depends(require("gallery"))) -> dict[str, Any]:
    """Enrol one or more images (exactly one face each, minimum size and quality, live unless
    waived). All are checked before any is stored; only embeddings are kept."""
    names = ("image",) + tuple(f"image{i}" for i in range(1, MAX_ENROL_IMAGES))
    up = await read_upload(request, state.settings.max_upload_bytes, names + ("images",))
    images = [up.images[n] for n in names if n in up.images]
    if not images:
        raise MissingImage("send one or more images (multipart fields image, image1, ...)")
    waive = bool_field(up.fields, "waive_liveness")
    embedder = str_field(up.fields, "embedder")
    with state.session() as session:
        repo.get_identity(session, identity_id)  # 404 before any model work

    def run() -> list[dict[str, Any]]:
        checked: list[EnrolItem] = []
        for i, image in enumerate(images):
            try:
                checked.append(enrolment_candidate(state.engine, state.settings, image,
                                                   waive_liveness=waive, embedder=embedder))
            except FaceSocialError as exc:
                exc.details = {**exc.details, "image_index": i}
                raise
        return [f.to_dict() for f in state.gallery.enrol(identity_id, checked)]

    stored = await run_in_threadpool(run)
    state.audit("gallery.enrol", principal, identity_id,
                {"faces": [f["id"] for f in stored], "waived_liveness": waive})
    return {"identity_id": identity_id, "faces": stored}


@router.post("/search", openapi_extra=image_body_schema(
    ("image",), {"top_k": {"type": "integer"}, "embedder": {"type": "string"}}))
async def search(request: Request, state: AppState = Depends(app_state),
                 principal: Principal = Depends(require("gallery"))) -> dict[str, Any]:
    """Search by image (largest face) or by embedding (JSON: embedding, model_id,
    model_version, top_k)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        up = await read_upload(request, state.settings.max_upload_bytes)
        if "image" not in up.images:
            try:
                body = EmbeddingSearch.model_validate(up.fields)
            except ValueError as exc:
                raise MalformedRequest(f"search by embedding needs embedding, model_id, "
                                       f"model_version: {exc}") from None
            probe = Embedding(vector=_unit(body.embedding),
                              model=ModelRef(body.model_id, body.model_version))
            hits = await run_in_threadpool(state.gallery.search, probe, body.top_k)
            return {"matches": [m.to_dict() for m in hits], "model": probe.model.to_dict()}
    else:
        up = await read_upload(request, state.settings.max_upload_bytes)
    image = up.image()
    top_k = int_field(up.fields, "top_k", 1, 50) or state.settings.recognize_top_k
    embedder = str_field(up.fields, "embedder")
    probe = await run_in_threadpool(state.engine.embed_largest, image, embedder)
    hits = await run_in_threadpool(state.gallery.search, probe, top_k)
    state.audit("identify.search", principal, None, {"matches": len(hits)})
    return {"matches": [m.to_dict() for m in hits], "model": probe.model.to_dict()}


def _unit(values: list[float]) -> Any:
    import numpy as np

    v = np.asarray(values, dtype=np.float32)
    n = float(np.linalg.norm(v))
    if not np.isfinite(v).all() or n == 0:
        raise MalformedRequest("the embedding must be finite and non-zero", field="embedding")
    return v / n
