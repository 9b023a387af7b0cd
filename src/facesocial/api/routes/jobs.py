"""Jobs over HTTP: batch analysis, video deepfake analysis, gallery import.

Submitting answers 202 with the job's status and where to poll; the work runs
on the configured executor (threads in this process, or Celery workers).
A job belongs to the principal that submitted it: only it (or an admin) can
see, read or cancel it, and anyone else gets the same 404 as for a job that
does not exist.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from facesocial.api.deps import AppState, Principal, app_state, require
from facesocial.api.uploads import (
    FileUpload,
    bool_field,
    int_field,
    read_file_upload,
    str_field,
)
from facesocial.engine import parse_tasks
from facesocial.errors import MalformedRequest, MissingImage, UnknownTask
from facesocial.jobs.model import BATCH_TASKS, JobStatus
from facesocial.jobs.service import UploadedFile

router = APIRouter(tags=["jobs"])
MAX_OFFSET = 1_000_000_000
_OVERHEAD = 1024 * 1024  # multipart framing and fields on top of the file bytes


def _owner(principal: Principal) -> str | None:
    """Whose jobs this principal may see: its own, or every job for admins."""
    return None if principal.role == "admin" else principal.id


def _job_out(status: JobStatus) -> dict[str, Any]:
    base = "/api/v1/batch"
    return {**status.to_dict(), "status_url": f"{base}/status/{status.id}",
            "result_url": f"{base}/result/{status.id}"}


def _batch_tasks(value: Any) -> list[str]:
    if value is None or value == "":
        names: list[str] = ["detect", "embed"]
    elif isinstance(value, str) and value.strip().startswith("["):
        try:
            names = json.loads(value)
        except json.JSONDecodeError:
            raise MalformedRequest("'tasks' is not a valid JSON list", field="tasks") from None
    elif isinstance(value, str):
        names = [t for t in value.replace(" ", "").split(",") if t]
    else:
        raise MalformedRequest("'tasks' must be a comma-separated string or a JSON list")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MalformedRequest("'tasks' must be a list of task names", field="tasks")
    unknown = [n for n in names if n not in BATCH_TASKS and n != "all"]
    if unknown:
        raise UnknownTask(f"unknown task '{unknown[0]}'", task=unknown[0],
                          known=list(BATCH_TASKS))
    recognize = "recognize" in names
    out = list(parse_tasks([n for n in names if n != "recognize"] or ["detect"]))
    if recognize:
        out += [t for t in ("detect", "embed") if t not in out] + ["recognize"]
    return out


def _files(up: FileUpload, fields: tuple[str, ...]) -> tuple[list[UploadedFile],
                                                              list[UploadedFile]]:
    """Uploaded files split into plain files and zip archives (by field or by name)."""
    files: list[UploadedFile] = []
    archives: list[UploadedFile] = []
    for name in fields:
        for i, f in enumerate(up.files.get(name, [])):
            item = UploadedFile(f.filename or f"{name}{i}", f.file)
            if name == "archive" or (f.filename or "").lower().endswith(".zip"):
                archives.append(item)
            else:
                files.append(item)
    return files, archives


async def _read(request: Request, state: AppState, max_bytes: int,
                fields: tuple[str, ...]) -> FileUpload:
    s = state.settings
    return await read_file_upload(request, max_bytes, fields, max_files=s.batch_max_items + 8)


@router.post("/batch/submit", status_code=202)
async def batch_submit(request: Request, state: AppState = Depends(app_state),
                       principal: Principal = Depends(require("batch"))) -> dict[str, Any]:
    """Many images (multipart `images`, repeated) and/or zip archives (`archive`), plus
    `tasks` (detect, embed, antispoof, demographics, deepfake, objects, recognize) and
    options (`detector`, `embedder`, `min_face_size`, `max_faces`, `include_embeddings`,
    `top_k`, `threshold`)."""
    s = state.settings
    up = await _read(request, state, s.batch_max_upload_bytes, ("images", "image", "archive"))
    try:
        tasks = _batch_tasks(up.fields.get("tasks"))
        threshold = str_field(up.fields, "threshold")
        if threshold not in (None, "default", "strict"):
            raise MalformedRequest("'threshold' must be 'default' or 'strict'", field="threshold")
        options = {"detector": str_field(up.fields, "detector"),
                   "embedder": str_field(up.fields, "embedder"),
                   "min_face_size": int_field(up.fields, "min_face_size"),
                   "max_faces": int_field(up.fields, "max_faces"),
                   "include_embeddings": bool_field(up.fields, "include_embeddings"),
                   "top_k": int_field(up.fields, "top_k", 1, 50), "threshold": threshold}
        if options["detector"] or options["embedder"]:  # a clear error now, not per item
            state.engine.resolve("face_detection", options["detector"])
            state.engine.resolve("face_embedding", options["embedder"])
        files, archives = _files(up, ("images", "image", "archive"))
        if not files and not archives:
            raise MissingImage("send images (multipart field 'images', repeated) or a zip "
                               "('archive')")
        status = await run_in_threadpool(
            state.jobs.submit, kind="batch", owner=principal.id, tasks=tasks,
            options={k: v for k, v in options.items() if v not in (None, False)},
            files=files, archives=archives)
    finally:
        up.close()
    state.audit("batch.submit", principal, status.id, {"items": status.total, "tasks": tasks})
    return _job_out(status)


@router.post("/video/deepfake", status_code=202)
async def video_deepfake(request: Request, state: AppState = Depends(app_state),
                         principal: Principal = Depends(require("face"))) -> dict[str, Any]:
    """A video upload (multipart `video`); the job's result has per-frame fake scores and one
    verdict. Options: `fps` (frames sampled per second), `model`."""
    s = state.settings
    up = await _read(request, state, s.video_max_bytes + _OVERHEAD, ("video",))
    try:
        videos = up.files.get("video", [])
        if len(videos) != 1:
            raise MissingImage("send exactly one video (multipart field 'video')", field="video")
        fps = up.fields.get("fps")
        options: dict[str, Any] = {}
        if fps not in (None, ""):
            try:
                options["sample_fps"] = float(fps)
            except (TypeError, ValueError):
                raise MalformedRequest("'fps' must be a number", field="fps") from None
            if not 0 < options["sample_fps"] <= 60:
                raise MalformedRequest("'fps' must be in (0, 60]", field="fps")
        model = str_field(up.fields, "model")
        if model:
            options["model"] = state.engine.resolve("deepfake_detection", model).id
        v = videos[0]
        status = await run_in_threadpool(
            state.jobs.submit, kind="video_deepfake", owner=principal.id, tasks=["deepfake"],
            options=options, files=[UploadedFile(v.filename or "video", v.file)], archives=[],
            max_item_bytes=s.video_max_bytes)
    finally:
        up.close()
    state.audit("video.deepfake.submit", principal, status.id, {})
    return _job_out(status)


@router.post("/gallery/import", status_code=202)
async def gallery_import(request: Request, state: AppState = Depends(app_state),
                         principal: Principal = Depends(require("gallery"))) -> dict[str, Any]:
    """Enrol many labelled images as one job: a zip whose folders are the identity names
    (`archive`), or images (`images`) with one `identity` name for all. Identities are found
    by exact name or created; each image passes the enrolment checks (one face, live unless
    `waive_liveness`, quality). Importing the same images again adds nothing."""
    s = state.settings
    up = await _read(request, state, s.batch_max_upload_bytes, ("images", "image", "archive"))
    try:
        identity = str_field(up.fields, "identity", max_len=256)
        options = {"waive_liveness": bool_field(up.fields, "waive_liveness"),
                   "embedder": str_field(up.fields, "embedder")}
        if options["embedder"]:
            state.engine.resolve("face_embedding", options["embedder"])
        files, archives = _files(up, ("images", "image", "archive"))
        if not files and not archives:
            raise MissingImage("send a zip ('archive') or images ('images') to import")
        status = await run_in_threadpool(
            state.jobs.submit, kind="gallery_import", owner=principal.id, tasks=["enrol"],
            options={k: v for k, v in options.items() if v not in (None, False)},
            files=files, archives=archives, default_label=identity)
    finally:
        up.close()
    state.audit("gallery.import.submit", principal, status.id,
                {"items": status.total, "identities": status.summary.get("identities")})
    return _job_out(status)


@router.get("/batch/status/{job_id}")
def batch_status(job_id: str, state: AppState = Depends(app_state),
                 principal: Principal = Depends(require())) -> dict[str, Any]:
    """State, counts (pending / running / done / failed / cancelled), progress, times and the
    estimated finish."""
    return _job_out(state.jobs.status(job_id, _owner(principal)))


@router.get("/batch/result/{job_id}")
def batch_result(job_id: str, request: Request,
                 offset: int = Query(0, ge=0, le=MAX_OFFSET),
                 limit: int = Query(100, ge=1, le=1000),
                 format: str | None = Query(None, pattern="^(json|ndjson)$"),  # noqa: A002
                 state: AppState = Depends(app_state),
                 principal: Principal = Depends(require())) -> Any:
    """Item results in order: a page of JSON, or every item as NDJSON (`format=ndjson` or
    `Accept: application/x-ndjson`), streamed for large jobs."""
    owner = _owner(principal)
    ndjson = format == "ndjson" or (format is None and "application/x-ndjson" in
                                    request.headers.get("accept", ""))
    if not ndjson:
        return state.jobs.results(job_id, owner, offset, limit)
    status = state.jobs.status(job_id, owner)  # 404 before the stream starts

    def lines() -> Any:
        for record in state.jobs.stream(job_id, owner):
            yield json.dumps(record, separators=(",", ":")) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson",
                             headers={"X-Job-State": status.state,
                                      "X-Job-Total": str(status.total)})


@router.delete("/batch/cancel/{job_id}")
def batch_cancel(job_id: str, state: AppState = Depends(app_state),
                 principal: Principal = Depends(require())) -> dict[str, Any]:
    """Cancel: pending items will not run (items already running finish). Cancelling a
    cancelled job again is harmless; a completed job answers 409 ``job_finished``."""
    status = state.jobs.cancel(job_id, _owner(principal))
    state.audit("batch.cancel", principal, job_id, {"counts": status.counts})
    return _job_out(status)


@router.get("/batch/jobs")
def batch_jobs(offset: int = Query(0, ge=0, le=MAX_OFFSET), limit: int = Query(50, ge=1, le=200),
               state: AppState = Depends(app_state),
               principal: Principal = Depends(require())) -> dict[str, Any]:
    """This principal's jobs (admins: everyone's), newest first."""
    return state.jobs.list_jobs(_owner(principal), offset, limit)
