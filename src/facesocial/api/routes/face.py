"""/face: detection, anti-spoofing, demographics, analysis, 1:1 verify, 1:N recognize.

Every endpoint takes an image as a multipart file or a base64 JSON field and
answers with the ids and versions of the models that produced the result.
Inference runs in the thread pool; results are cached by (image sha256, tasks,
options, model versions).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from facesocial.api.cache import cache_key
from facesocial.api.deps import AppState, Principal, app_state, require
from facesocial.api.uploads import image_body_schema, int_field, read_upload, str_field
from facesocial.engine import estimate_fmr, parse_tasks
from facesocial.errors import MalformedRequest, NoFaceFound, NoGalleryForModel
from facesocial.gallery import repository as repo
from facesocial.results import Embedding

router = APIRouter(prefix="/face", tags=["face"])

_OPTIONS = {"tasks": {"type": "string", "description": "comma list or JSON array"},
            "detector": {"type": "string"}, "embedder": {"type": "string"},
            "min_face_size": {"type": "integer"}, "max_faces": {"type": "integer"}}


def _tasks(value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None or value == "":
        return default
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise MalformedRequest("'tasks' must be a list of strings")
        return parse_tasks(value)
    if isinstance(value, str):
        return parse_tasks(value)
    raise MalformedRequest("'tasks' must be a comma-separated string or a list")


async def _analyze(request: Request, state: AppState, default: tuple[str, ...],
                   fixed: bool = False) -> dict[str, Any]:
    up = await read_upload(request, state.settings.max_upload_bytes)
    image = up.image()
    tasks = default if fixed else _tasks(up.fields.get("tasks"), default)
    options = {"detector": str_field(up.fields, "detector"),
               "embedder": str_field(up.fields, "embedder"),
               "min_face_size": int_field(up.fields, "min_face_size"),
               "max_faces": int_field(up.fields, "max_faces")}
    engine = state.engine
    models = state.model_versions(tasks, options["detector"], options["embedder"])
    key = cache_key(image, tasks, options, models)
    hit = state.cache.get(key)
    if hit is not None:
        return {**hit, "cached": True}

    def run() -> dict[str, Any]:
        analysis = engine.analyze(image, tasks, detector=options["detector"],
                                  embedder=options["embedder"],
                                  min_face_size=options["min_face_size"],
                                  max_faces=options["max_faces"])
        return analysis.to_dict()

    result = await run_in_threadpool(run)
    state.cache.put(key, result)
    return {**result, "cached": False}


def _verify_identity(state: AppState, identity_id: str, probe: Embedding,
                     which: str) -> dict[str, Any]:
    """Score = best cosine over the identity's faces of the probe's model and version."""
    with state.session() as session:
        ident = repo.get_identity(session, identity_id)
        data = repo.identity_embeddings(session, probe.model.id, probe.model.version,
                                        [identity_id])
        name = ident.name
    if len(data) == 0:
        raise NoGalleryForModel(
            f"identity '{identity_id}' has no face enrolled with {probe.model.id} "
            f"{probe.model.version}", model=probe.model.to_dict())
    spec = state.engine.catalog.get(probe.model.id)
    score = float(np.max(data.vectors @ probe.vector))
    threshold, name_thr = state.engine.threshold(spec, which)
    return {"identity_id": identity_id, "name": name, "score": round(score, 4),
            "threshold": threshold, "threshold_name": name_thr, "match": score >= threshold,
            "estimated_false_match_rate": estimate_fmr(spec, score),
            "faces_compared": len(data), "model": probe.model.to_dict()}


@router.post("/detect", openapi_extra=image_body_schema(("image",), _OPTIONS))
async def detect(request: Request, state: AppState = Depends(app_state),
                 _: Principal = Depends(require("face"))) -> dict[str, Any]:
    """Faces with boxes, 5 landmarks and scores."""
    return await _analyze(request, state, ("detect",), fixed=True)


@router.post("/antispoof", openapi_extra=image_body_schema(("image",), _OPTIONS))
async def antispoof(request: Request, state: AppState = Depends(app_state),
                    _: Principal = Depends(require("face"))) -> dict[str, Any]:
    """Live / print / replay verdict per face."""
    return await _analyze(request, state, ("detect", "antispoof"), fixed=True)


@router.post("/demographics", openapi_extra=image_body_schema(("image",), _OPTIONS))
async def demographics(request: Request, state: AppState = Depends(app_state),
                       _: Principal = Depends(require("face"))) -> dict[str, Any]:
    """Age and gender per face."""
    return await _analyze(request, state, ("detect", "demographics"), fixed=True)


@router.post("/analyze", openapi_extra=image_body_schema(("image",), _OPTIONS))
async def analyze(request: Request, state: AppState = Depends(app_state),
                  _: Principal = Depends(require("face"))) -> dict[str, Any]:
    """Any set of tasks in one pass (default: all)."""
    return await _analyze(request, state, ("detect", "embed", "antispoof", "demographics",
                                           "deepfake", "objects"))


@router.post("/verify", openapi_extra=image_body_schema(
    ("image",), {"image_b": {"type": "string", "format": "byte"},
                 "identity_id": {"type": "string"}, "threshold": {"type": "string"},
                 "embedder": {"type": "string"}}))
async def verify(request: Request, state: AppState = Depends(app_state),
                 principal: Principal = Depends(require("face"))) -> dict[str, Any]:
    """1:1: two images (`image`, `image_b`), or an image against an enrolled identity."""
    up = await read_upload(request, state.settings.max_upload_bytes, ("image", "image_b"))
    image = up.image()
    which = str_field(up.fields, "threshold") or "default"
    if which not in ("default", "strict"):
        raise MalformedRequest("'threshold' must be 'default' or 'strict'", field="threshold")
    embedder = str_field(up.fields, "embedder")
    identity_id = str_field(up.fields, "identity_id")
    engine = state.engine
    if identity_id is not None:
        probe = await run_in_threadpool(engine.embed_largest, image, embedder)
        result = await run_in_threadpool(_verify_identity, state, identity_id, probe, which)
        state.audit("identify.verify", principal, identity_id,
                    {"match": result["match"], "score": result["score"]})
        return result
    other = up.image("image_b")

    def run() -> dict[str, Any]:
        return engine.verify(image, other, embedder=embedder, threshold=which).to_dict()

    return await run_in_threadpool(run)


@router.post("/recognize", openapi_extra=image_body_schema(
    ("image",), {"top_k": {"type": "integer"}, "threshold": {"type": "string"},
                 "embedder": {"type": "string"}}))
async def recognize(request: Request, state: AppState = Depends(app_state),
                    principal: Principal = Depends(require("face"))) -> dict[str, Any]:
    """1:N: every face in the image against the gallery; top-k, unknown under the threshold."""
    up = await read_upload(request, state.settings.max_upload_bytes)
    image = up.image()
    top_k = int_field(up.fields, "top_k", 1, 50) or state.settings.recognize_top_k
    which = str_field(up.fields, "threshold") or "default"
    if which not in ("default", "strict"):
        raise MalformedRequest("'threshold' must be 'default' or 'strict'", field="threshold")
    embedder = str_field(up.fields, "embedder")

    def run() -> dict[str, Any]:
        analysis = state.engine.analyze(image, ("detect", "embed"), embedder=embedder)
        if not analysis.faces:
            raise NoFaceFound("no face found in the image")
        embeddings = [f.embedding for f in analysis.faces if f.embedding is not None]
        spec = state.engine.catalog.get(embeddings[0].model.id)
        threshold, _name = state.engine.threshold(spec, which)
        out = state.gallery.recognize(embeddings, threshold=threshold,
                                      k=min(top_k, 50)).to_dict()
        for face, match in zip(analysis.faces, out["faces"], strict=True):
            match["box"] = [round(v, 1) for v in face.box]
            match["quality"] = face.quality.to_dict() if face.quality is not None else None
        out["threshold_name"] = which
        out["models"] = analysis.models()
        return out

    result = await run_in_threadpool(run)
    identified = [f["identity_id"] for f in result["faces"] if f.get("identity_id")]
    state.audit("identify.recognize", principal, None,
                {"faces": len(result["faces"]), "identified": identified})
    return result
