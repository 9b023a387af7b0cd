"""The work of one item, per job kind. Each returns the item's JSON result or raises.

Handlers run wherever the item is delivered (the API process or a Celery
worker) against that process's engine and gallery. They must be safe to run
twice for the same item: analysis has no side effects, and enrolment is
idempotent per (identity, model, image), so a re-delivered import item finds
its face already stored (outcome ``existing``) instead of adding another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from facesocial.db.models import Job, JobItem
from facesocial.errors import FaceSocialError, NoFaceFound
from facesocial.jobs.spool import Spool
from facesocial.settings import Settings


class JobContext(Protocol):
    """What a process needs to run items: built once per API process or worker process."""

    settings: Settings
    engine: Any  # facesocial.engine.Engine
    gallery: Any  # facesocial.gallery.service.Gallery
    spool: Spool
    sessions: sessionmaker[Session]


IMPORT_SOURCE = "gallery_import"  # identities.metadata.source of those an import created


def run_batch(ctx: JobContext, job: Job, item: JobItem) -> dict[str, Any]:
    tasks = list(job.tasks or [])
    recognize = "recognize" in tasks
    engine_tasks = [t for t in tasks if t != "recognize"]
    if recognize and "embed" not in engine_tasks:
        engine_tasks.append("embed")
    opts = job.options or {}
    analysis = ctx.engine.analyze(ctx.spool.read(item.input_path or ""), engine_tasks,
                                  detector=opts.get("detector"), embedder=opts.get("embedder"),
                                  min_face_size=opts.get("min_face_size"),
                                  max_faces=opts.get("max_faces"))
    out = analysis.to_dict(include_vectors=bool(opts.get("include_embeddings")))
    out["models"] = analysis.models()
    if recognize:
        out["recognition"] = _recognize(ctx, analysis, opts)
    return out


def _recognize(ctx: JobContext, analysis: Any, opts: dict[str, Any]) -> dict[str, Any]:
    embeddings = [f.embedding for f in analysis.faces if f.embedding is not None]
    if not embeddings:
        return {"faces": [], "model": None, "threshold": None}
    spec = ctx.engine.catalog.get(embeddings[0].model.id)
    threshold, name = ctx.engine.threshold(spec, opts.get("threshold") or "default")
    try:
        rec = ctx.gallery.recognize(embeddings, threshold=threshold,
                                    k=int(opts.get("top_k") or ctx.settings.recognize_top_k))
    except FaceSocialError as exc:  # e.g. no gallery for this model: the analysis still counts
        return {"error": exc.to_dict()}
    return {**rec.to_dict(), "threshold_name": name}


def run_video(ctx: JobContext, job: Job, item: JobItem) -> dict[str, Any]:
    path = ctx.spool.existing(item.input_path or "")
    opts = job.options or {}
    result = ctx.engine.deepfake_video(path, model=opts.get("model"),
                                       sample_fps=opts.get("sample_fps"))
    return result.to_dict()  # type: ignore[no-any-return]


def run_import(ctx: JobContext, job: Job, item: JobItem) -> dict[str, Any]:
    from facesocial.gallery.enrolment import enrolment_candidate

    opts = job.options or {}
    identity_id = (opts.get("identities") or {}).get(item.label or "")
    if identity_id is None:  # submit resolved every label; a missing one is a bug
        raise RuntimeError(f"import job {job.id} has no identity for label {item.label!r}")
    image = ctx.spool.read(item.input_path or "")
    try:
        candidate = enrolment_candidate(ctx.engine, ctx.settings, image,
                                        waive_liveness=bool(opts.get("waive_liveness")),
                                        embedder=opts.get("embedder"))
    except NoFaceFound as exc:  # one face is required: say it the way enrolment does
        exc.details = {**exc.details, "faces": 0}
        raise
    enrolled = ctx.gallery.enrol(identity_id, [candidate])[0]
    return {"identity_id": identity_id, "identity": item.label, "face_id": enrolled.face.id,
            "outcome": enrolled.outcome.value, "quality": round(candidate.quality or 0.0, 4),
            "model": candidate.embedding.model.to_dict()}


def end_import(ctx: JobContext, job_id: str) -> list[str]:
    """Once an import job has ended and no item runs: of the identities it was given, delete
    those an import created that still have no face (every image of that person failed, or
    the job was cancelled first), unless an import still running was given them too (it
    deletes them when it ends, if they are still empty then). Idempotent; the ids go into
    the job's summary as ``identities_removed_empty``."""
    from facesocial.jobs import store
    from facesocial.jobs.model import ACTIVE_JOB

    with ctx.sessions.begin() as session:
        job = store.get_job(session, job_id)
        if job.kind != "gallery_import" or job.state in ACTIVE_JOB or \
                store.counts(session, job_id).get("running", 0):
            return []
        return prune_import(session, job)


def prune_import(session: Session, job: Job) -> list[str]:
    """:func:`end_import`'s work inside the caller's transaction (the one that completes the
    job, so no reader sees it completed without its summary)."""
    from facesocial.gallery import repository as repo
    from facesocial.jobs.model import ACTIVE_JOB

    if job.kind != "gallery_import":
        return []
    mine = set((job.options or {}).get("identities", {}).values())
    others = session.scalars(select(Job.options).where(
        Job.kind == "gallery_import", Job.state.in_(ACTIVE_JOB), Job.id != job.id)).all()
    for opts in others:
        mine -= set((opts or {}).get("identities", {}).values())
    gone = repo.delete_if_empty(session, sorted(mine), {"source": IMPORT_SOURCE})
    if gone:
        summary = dict(job.summary or {})
        summary["identities_removed_empty"] = sorted(
            set(summary.get("identities_removed_empty", [])) | set(gone))
        job.summary = summary
    return gone


HANDLERS: dict[str, Callable[[JobContext, Job, JobItem], dict[str, Any]]] = {
    "batch": run_batch,
    "video_deepfake": run_video,
    "gallery_import": run_import,
}


def summarize(kind: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Job-level figures once every item has ended (kept in the job's summary)."""
    if kind == "video_deepfake" and results:
        r = results[0]
        return {"verdict": r.get("verdict"), "fake_score": r.get("fake_score"),
                "frames_sampled": r.get("frames_sampled")}
    if kind == "gallery_import":
        outcomes = [r.get("outcome") for r in results]
        return {"faces_created": outcomes.count("created"),
                "faces_existing": outcomes.count("existing"),
                "faces_replaced": outcomes.count("replaced")}
    if kind == "batch":
        return {"faces": sum(int(r.get("face_count") or 0) for r in results)}
    return {}
