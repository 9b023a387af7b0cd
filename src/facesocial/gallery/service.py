"""The gallery: enrolled identities, their face embeddings, and 1:N search.

:class:`Gallery` is the one object the API uses. It writes the database and
keeps the vector search in step with it, in one place:

* backend ``"memory"`` (default on SQLite): an in-process :class:`GalleryIndex`
  rebuilt from the database at start and kept in step by replaying the
  ``gallery_changes`` log before each search and after each write, so faces
  enrolled by other processes (batch workers, other API processes) are found;
* backend ``"pgvector"`` (default on PostgreSQL): the ``faces`` table is the
  index (per-model partial HNSW indexes, :mod:`facesocial.gallery.pgvector`).

Embeddings of different models are never compared: every search runs among
faces of the query's model id *and* version, and a gallery without faces of
that model answers with :class:`~facesocial.errors.NoGalleryForModel`.
An identity's similarity to a probe is its best enrolled face (template mode
``"max"``); a multi-face image is resolved one-to-one with
:func:`facesocial.recognition.assign_identities`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from facesocial.db.models import Face, Identity
from facesocial.errors import (
    Conflict,
    IncompatibleEmbeddings,
    InvalidInput,
    NoGalleryForModel,
    UnknownModel,
)
from facesocial.gallery import repository as repo
from facesocial.gallery.index import FaceHit, GalleryIndex, ModelKey
from facesocial.gallery.repository import AddOutcome, MetaValue, Page
from facesocial.recognition import assign_identities, template_scores
from facesocial.results import Embedding
from facesocial.runtime import ModelRef
from facesocial.settings import Settings

if TYPE_CHECKING:
    from facesocial.gallery.pgvector import PgVectorSearch
    from facesocial.models.catalog import Catalog

log = logging.getLogger(__name__)

Backend = Literal["auto", "memory", "pgvector"]
MAX_FACE_CANDIDATES = 16384  # face hits examined per query to collect k distinct identities
VECTOR_ATOL = 1e-5
SYNC_MAX_CHANGES = 50_000  # a longer backlog is replayed by rebuilding the index


# ------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class IdentityInfo:
    id: str
    name: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    face_count: int = 0

    @classmethod
    def of(cls, ident: Identity, face_count: int = 0) -> IdentityInfo:
        return cls(ident.id, ident.name, dict(ident.meta or {}), ident.created_at,
                   ident.updated_at, face_count)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "metadata": self.metadata,
                "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat(), "face_count": self.face_count}


@dataclass(frozen=True, slots=True)
class FaceInfo:
    id: str
    identity_id: str
    model_id: str
    model_version: str
    dim: int
    quality: float | None
    image_sha256: str
    created_at: datetime

    @classmethod
    def of(cls, face: Face) -> FaceInfo:
        return cls(face.id, face.identity_id, face.model_id, face.model_version, face.dim,
                   face.quality, face.image_sha256, face.created_at)

    @property
    def model_key(self) -> ModelKey:
        return (self.model_id, self.model_version)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "identity_id": self.identity_id,
                "model": {"id": self.model_id, "version": self.model_version},
                "dim": self.dim, "quality": self.quality, "image_sha256": self.image_sha256,
                "created_at": self.created_at.isoformat()}


@dataclass(frozen=True, slots=True)
class EnrolItem:
    """One face to enrol: its embedding (naming its model), source image hash, quality."""

    embedding: Embedding
    image_sha256: str
    quality: float | None = None


@dataclass(frozen=True, slots=True)
class EnrolledFace:
    face: FaceInfo
    outcome: AddOutcome  # created | existing | replaced

    def to_dict(self) -> dict[str, Any]:
        return {**self.face.to_dict(), "outcome": self.outcome.value}


class Match(NamedTuple):
    """An identity's best face for a probe (template mode "max")."""

    identity_id: str
    name: str
    face_id: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"identity_id": self.identity_id, "name": self.name, "face_id": self.face_id,
                "score": round(self.score, 4)}


@dataclass(frozen=True, slots=True)
class FaceRecognition:
    """The verdict for one probe face: its one-to-one identity and its top-k candidates."""

    face: int  # position in the probe list
    identity_id: str | None  # None: unknown
    name: str | None
    face_id: str | None  # the assigned identity's best matching enrolled face
    score: float  # similarity to the assigned identity, or the best score when unknown
    candidates: tuple[Match, ...]

    @property
    def known(self) -> bool:
        return self.identity_id is not None

    def to_dict(self) -> dict[str, Any]:
        return {"face": self.face, "identity_id": self.identity_id, "name": self.name,
                "face_id": self.face_id, "score": round(self.score, 4), "known": self.known,
                "candidates": [c.to_dict() for c in self.candidates]}


@dataclass(frozen=True, slots=True)
class Recognition:
    faces: tuple[FaceRecognition, ...]
    model: ModelRef | None
    threshold: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"faces": [f.to_dict() for f in self.faces],
                "model": self.model.to_dict() if self.model else None,
                "threshold": self.threshold}


@dataclass(slots=True)
class ConsistencyReport:
    """Differences between the search backend and the database (empty lists: in step)."""

    backend: str
    faces_in_db: int = 0
    faces_in_index: int = 0
    missing_in_index: list[str] = field(default_factory=list)  # face ids
    extra_in_index: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # wrong identity, model or vector
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_in_index or self.extra_in_index or self.mismatched
                    or self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "ok": self.ok, "faces_in_db": self.faces_in_db,
                "faces_in_index": self.faces_in_index,
                "missing_in_index": self.missing_in_index, "extra_in_index": self.extra_in_index,
                "mismatched": self.mismatched, "problems": self.problems, "notes": self.notes}


@dataclass(frozen=True, slots=True)
class ModelPlan:
    model_id: str
    model_version: str
    dim: int
    faces: int
    identities: int
    action: str  # "keep" (the new model) | "re-enrol" (any other model or version)

    def to_dict(self) -> dict[str, Any]:
        return {"model": {"id": self.model_id, "version": self.model_version}, "dim": self.dim,
                "faces": self.faces, "identities": self.identities, "action": self.action}


@dataclass(frozen=True, slots=True)
class ReindexPlan:
    """What an operator must do before a new default embedding model can serve the gallery."""

    target: ModelKey
    models: tuple[ModelPlan, ...]
    faces_to_reenrol: int
    identities_with_faces: int
    identities_ready: int  # already have at least one face of the target model
    identities_to_reenrol: tuple[str, ...]  # ids (possibly truncated, see total)
    identities_to_reenrol_total: int
    steps: tuple[str, ...]

    @property
    def nothing_to_do(self) -> bool:
        return self.faces_to_reenrol == 0

    def to_dict(self) -> dict[str, Any]:
        return {"target": {"id": self.target[0], "version": self.target[1]},
                "models": [m.to_dict() for m in self.models],
                "faces_to_reenrol": self.faces_to_reenrol,
                "identities_with_faces": self.identities_with_faces,
                "identities_ready": self.identities_ready,
                "identities_to_reenrol": list(self.identities_to_reenrol),
                "identities_to_reenrol_total": self.identities_to_reenrol_total,
                "steps": list(self.steps)}


# ------------------------------------------------------------------- gallery
def _key(model: ModelRef) -> ModelKey:
    return (model.id, model.version)


class Gallery:
    """Identities, enrolled faces and 1:N search, with DB and index kept in step.

    ``session_factory`` is a :func:`facesocial.db.session.session_factory`
    (the schema must be migrated). Thread-safe. The in-process backend follows
    writes of other processes through the change log (see :meth:`sync`); it relies
    on writers committing in log order, which SQLite guarantees.
    """

    def __init__(self, session_factory: sessionmaker[Session], settings: Settings,
                 backend: Backend = "auto", *, catalog: Catalog | None = None) -> None:
        self._sf = session_factory
        self.settings = settings
        self._catalog = catalog
        self._write_lock = threading.RLock()
        with session_factory() as s:
            bind = s.get_bind()
        engine = getattr(bind, "engine", bind)
        dialect = engine.dialect.name
        if backend == "auto":  # the caller's choice, else the settings', else by database
            backend = settings.gallery_backend
        if backend == "auto":
            backend = "pgvector" if dialect == "postgresql" else "memory"
        if backend not in ("memory", "pgvector"):
            raise ValueError(f"unknown gallery backend '{backend}'")
        if backend == "pgvector" and dialect != "postgresql":
            raise ValueError("the pgvector backend needs PostgreSQL")
        self.backend: str = backend
        self._index: GalleryIndex | None = None
        self._seen_seq = 0  # last gallery_changes row replayed into the in-process index
        self._pg: PgVectorSearch | None = None
        if backend == "pgvector":
            from facesocial.gallery.pgvector import PgVectorSearch

            self._pg = PgVectorSearch(engine)
        else:
            self.refresh()
        log.info("gallery ready: backend=%s on %s", self.backend, dialect)

    # ------------------------------------------------------------ plumbing
    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._sf() as s:
            yield s

    def refresh(self) -> None:
        """Rebuild the in-process index from the database (no-op for pgvector)."""
        if self.backend != "memory":
            return
        with self._write_lock, self._read() as s:
            # the log position first: a write landing during the load is replayed again
            # later, which is harmless (replay is an upsert per face)
            _oldest, newest = repo.change_bounds(s)
            self._index = GalleryIndex.from_repository(
                s, self.settings.gallery_hnsw_min, self.settings.gallery_hnsw_ef)
            self._seen_seq = newest

    def sync(self) -> int:
        """Bring the in-process index up to date with writes made by any process.

        Replays the ``gallery_changes`` log after the last position seen: each
        touched face is dropped from the index and, if it still exists, added
        back with its stored vector and model. SQLite serialises writers, so the
        log's order is the commit order. Returns the number of faces replayed;
        rebuilds the whole index when the log was pruned past our position or
        the backlog is large. No-op for pgvector (the table is the index).
        """
        if self._index is None:
            return 0
        with self._write_lock:
            with self._read() as s:
                oldest, newest = repo.change_bounds(s)
                if newest == self._seen_seq:
                    return 0
                if newest < self._seen_seq or (oldest and oldest > self._seen_seq + 1):
                    stale = True  # the log was reset or pruned past what we saw
                else:
                    changes = repo.changes_since(s, self._seen_seq, SYNC_MAX_CHANGES + 1)
                    stale = len(changes) > SYNC_MAX_CHANGES
            if stale:
                log.info("gallery index: change log moved past our position; rebuilding")
                self.refresh()
                return -1
            touched = list(dict.fromkeys(f for _seq, f in changes))
            with self._read() as s:
                rows = repo.face_rows(s, touched)
            try:
                for fid in touched:
                    self._index.remove_face(fid)
                    row = rows.get(fid)
                    if row is not None:
                        iid, mid, ver, vec = row
                        self._index.add((mid, ver), fid, iid, vec)
            except Exception:
                log.exception("index replay failed; rebuilding from the database")
                self.refresh()
                return -1
            self._seen_seq = changes[-1][0]
            return len(touched)

    @property
    def index(self) -> GalleryIndex | None:
        """The in-process index (None with the pgvector backend)."""
        return self._index

    # ---------------------------------------------------------- identities
    def create_identity(self, name: str, metadata: Mapping[str, Any] | None = None,
                        ) -> IdentityInfo:
        with self._sf.begin() as s:
            ident = repo.create_identity(s, name, metadata)
            info = IdentityInfo.of(ident)
        log.info("identity %s created", info.id)
        return info

    def get_identity(self, identity_id: str) -> IdentityInfo:
        with self._read() as s:
            ident = repo.get_identity(s, identity_id)
            return IdentityInfo.of(ident, repo.face_counts(s, [ident.id]).get(ident.id, 0))

    def list_identities(self, *, offset: int = 0, limit: int = 50,
                        name_contains: str | None = None,
                        metadata: Mapping[str, MetaValue] | None = None) -> Page:
        """A page of :class:`IdentityInfo` (with face counts), oldest first."""
        with self._read() as s:
            page = repo.list_identities(s, offset=offset, limit=limit,
                                        name_contains=name_contains, meta=metadata)
            counts = repo.face_counts(s, [i.id for i in page.items])
            items = [IdentityInfo.of(i, counts.get(i.id, 0)) for i in page.items]
        return Page(items=items, total=page.total, offset=page.offset, limit=page.limit)

    def update_identity(self, identity_id: str, *, name: str | None = None,
                        metadata: Mapping[str, Any] | None = None,
                        merge_metadata: bool = False) -> IdentityInfo:
        with self._sf.begin() as s:
            ident = repo.update_identity(s, identity_id, name=name, meta=metadata,
                                         merge_meta=merge_metadata)
            info = IdentityInfo.of(ident, repo.face_counts(s, [ident.id]).get(ident.id, 0))
        return info

    def delete_identity(self, identity_id: str) -> int:
        """Delete an identity and all its faces; returns how many faces went."""
        with self._write_lock:
            with self._sf.begin() as s:
                refs = repo.delete_identity(s, identity_id)
            self.sync()
        log.info("identity %s deleted with %d faces", identity_id, len(refs))
        return len(refs)

    # --------------------------------------------------------------- faces
    def list_faces(self, *, identity_id: str | None = None, model: ModelRef | None = None,
                   offset: int = 0, limit: int = 50) -> Page:
        """A page of :class:`FaceInfo`, optionally of one identity and/or model version."""
        with self._read() as s:
            page = repo.list_faces(s, identity_id=identity_id,
                                   model_id=model.id if model else None,
                                   model_version=model.version if model else None,
                                   offset=offset, limit=limit)
            items = [FaceInfo.of(f) for f in page.items]
        return Page(items=items, total=page.total, offset=page.offset, limit=page.limit)

    def enrol(self, identity_id: str, items: Sequence[EnrolItem]) -> list[EnrolledFace]:
        """Store faces for an identity and make them searchable; all or nothing.

        Idempotent per (identity, model, image sha256): a repeat returns the
        stored face (outcome ``existing``); the same image embedded by another
        version of the model replaces the old embedding (``replaced``). The
        database transaction commits first; the index then follows. Should the
        index update fail, the affected model indexes are rebuilt from the
        database, so the two never disagree.
        """
        if not items:
            raise InvalidInput("nothing to enrol")
        prepared = []
        for it in items:  # validate everything before writing anything
            ref = it.embedding.model
            repo.check_model_token(ref.id, "model_id")
            repo.check_model_token(ref.version, "model_version")
            prepared.append((it, repo.normalize_vector(it.embedding.vector),
                             repo.check_sha256(it.image_sha256)))
        with self._write_lock:
            done = self._write_faces(identity_id, prepared)
            self.sync()
        if self._pg is not None:  # after the commit: CREATE INDEX must not wait on it
            for key, dim in {d.face.model_key: d.face.dim for d in done}.items():
                self._ensure_pg_index(key, dim)
        log.info("identity %s: enrolled %s", identity_id,
                 ", ".join(f"{d.face.id}={d.outcome.value}" for d in done))
        return done

    def _write_faces(self, identity_id: str, prepared: list[tuple[EnrolItem, np.ndarray, str]],
                     ) -> list[EnrolledFace]:
        for attempt in (1, 2):
            try:
                with self._sf.begin() as s:
                    out: list[EnrolledFace] = []
                    for it, vec, sha in prepared:
                        face, outcome = repo.add_face(
                            s, identity_id, embedding=vec, model_id=it.embedding.model.id,
                            model_version=it.embedding.model.version, quality=it.quality,
                            image_sha256=sha)
                        if any(d.face.id == face.id for d in out):  # same image twice in one call
                            outcome = AddOutcome.EXISTING
                        out.append(EnrolledFace(FaceInfo.of(face), outcome))
                return out
            except IntegrityError as exc:  # a concurrent writer won a race on uq_face_source
                if attempt == 2:
                    raise Conflict("the faces changed while enrolling; try again",
                                   identity_id=identity_id) from exc
                log.info("enrol of %s raced another writer; retrying", identity_id)
        raise AssertionError("unreachable")

    def _ensure_pg_index(self, key: ModelKey, dim: int) -> None:
        if self._pg is None:
            return
        try:
            self._pg.ensure_index(key, dim)
        except Exception:  # the index only speeds search up; a sequential scan is still right
            log.exception("could not create the HNSW index for %s@%s", *key)

    def delete_face(self, face_id: str) -> FaceInfo:
        """Delete one enrolled face; returns what it was."""
        with self._write_lock:
            with self._sf.begin() as s:
                info = FaceInfo.of(repo.get_face(s, face_id))
                repo.delete_face(s, face_id)
            self.sync()
        log.info("face %s deleted", face_id)
        return info

    def purge_model(self, model_id: str, model_version: str) -> int:
        """Delete every face of one model version (the last step of a model change)."""
        key = (model_id, model_version)
        with self._write_lock:
            with self._sf.begin() as s:
                dim = repo.model_dim(s, model_id, model_version)
                refs = repo.delete_model_faces(s, model_id, model_version)
            self.sync()
            if self._pg is not None and dim is not None:
                self._pg.drop_index(key, dim)
        log.info("purged %d faces of %s@%s", len(refs), model_id, model_version)
        return len(refs)

    # -------------------------------------------------------------- search
    def _gallery_missing(self, s: Session, model: ModelRef) -> NoGalleryForModel:
        held = [{"id": c.model_id, "version": c.model_version, "faces": c.faces}
                for c in repo.model_counts(s)]
        return NoGalleryForModel(
            f"the gallery holds no faces embedded by {model.id}@{model.version}; enrol with "
            "that model or search with one the gallery holds", model=model.to_dict(),
            gallery_models=held)

    def _face_search(self, s: Session, model: ModelRef, q: np.ndarray,
                     kf: int) -> list[list[FaceHit]]:
        key = _key(model)
        if self._index is not None:
            idx = self._index.get(key)
            if idx is None:
                raise self._gallery_missing(s, model)
            return idx.search(q, kf)
        assert self._pg is not None
        dim = self._pg_dim(s, model)
        return self._pg.search(s, key, dim, q, kf)

    def _pg_dim(self, s: Session, model: ModelRef) -> int:
        dim = repo.model_dim(s, model.id, model.version)
        if dim is None:
            raise self._gallery_missing(s, model)
        return dim

    def _check_dim(self, s: Session, model: ModelRef, got: int) -> None:
        if self._index is not None:
            idx = self._index.get(_key(model))
            if idx is None:
                raise self._gallery_missing(s, model)
            dim = idx.dim
        else:
            dim = self._pg_dim(s, model)
        if dim != got:
            raise IncompatibleEmbeddings(
                f"{model.id}@{model.version} gallery embeddings are {dim}-d, the query is "
                f"{got}-d", model=model.to_dict(), dim=dim, got=got)

    def _top_identities(self, s: Session, model: ModelRef, q: np.ndarray,
                        k: int) -> list[list[FaceHit]]:
        """Per query, the best face of each of the ``k`` most similar identities."""
        out: list[list[FaceHit]] = [[] for _ in range(len(q))]
        pending = list(range(len(q)))
        kf = max(4 * k, k + 16)
        while pending:
            hits = self._face_search(s, model, q[pending], kf)
            still: list[int] = []
            for row, found in zip(pending, hits, strict=True):
                best: dict[str, FaceHit] = {}
                for h in found:  # hits come best first: the first per identity is its max
                    best.setdefault(h.identity_id, h)
                out[row] = list(best.values())[:k]
                if len(best) < k and len(found) >= kf:
                    still.append(row)
            if still and kf >= MAX_FACE_CANDIDATES:
                log.warning("gave up collecting %d identities after %d face hits", k, kf)
                break
            pending, kf = still, min(MAX_FACE_CANDIDATES, kf * 4)
        return out

    def _named(self, s: Session, hits: list[list[FaceHit]]) -> list[list[Match]]:
        names = repo.identity_names(s, [h.identity_id for row in hits for h in row])
        return [[Match(h.identity_id, names[h.identity_id], h.face_id, h.score) for h in row
                 if h.identity_id in names] for row in hits]  # skip ones deleted meanwhile

    def search(self, embedding: Embedding, k: int | None = None) -> list[Match]:
        """The ``k`` identities most similar to one probe, best first.

        Only faces of the probe's model id and version are searched; raises
        :class:`NoGalleryForModel` when there are none.
        """
        k = self._k(k)
        q = repo.normalize_vector(embedding.vector)[None, :]
        self._before_search(embedding.model, q.shape[1])
        with self._read() as s:
            self._check_dim(s, embedding.model, q.shape[1])
            return self._named(s, self._top_identities(s, embedding.model, q, k))[0]

    def recognize(self, embeddings: Sequence[Embedding], threshold: float | None = None,
                  k: int | None = None) -> Recognition:
        """Who is each face of one image: top-k candidates and a one-to-one assignment.

        All embeddings must come from one model version. ``threshold`` defaults
        to the model's calibrated default from the catalog. An identity goes to
        at most one face (Hungarian assignment over the candidates' exact
        template scores); faces under the threshold stay unknown.
        """
        k = self._k(k)
        if not embeddings:
            return Recognition((), None, threshold)
        model = embeddings[0].model
        for e in embeddings[1:]:
            if _key(e.model) != _key(model):
                raise IncompatibleEmbeddings("all faces of one recognition must come from one "
                                             "model version", a=model.to_dict(),
                                             b=e.model.to_dict())
        thr = self._threshold(model) if threshold is None else float(threshold)
        q = np.stack([repo.normalize_vector(e.vector) for e in embeddings])
        self._before_search(model, q.shape[1])
        with self._read() as s:
            self._check_dim(s, model, q.shape[1])
            per_face = self._named(s, self._top_identities(s, model, q, k))
            names = {m.identity_id: m.name for row in per_face for m in row}
            cand = list(names)
            vecs, face_ids, owners = self._identity_vectors(s, model, cand)
        faces: list[FaceRecognition] = []
        if not cand:
            for i in range(len(q)):
                faces.append(FaceRecognition(i, None, None, None, -1.0, ()))
            return Recognition(tuple(faces), model, thr)
        col = {iid: j for j, iid in enumerate(cand)}
        owner_idx = np.array([col[o] for o in owners], np.int64)
        scores = template_scores(q, vecs, owner_idx, len(cand), "max")
        for a in assign_identities(scores, thr):
            if a.identity < 0:
                faces.append(FaceRecognition(a.face, None, None, None, a.score,
                                             tuple(per_face[a.face])))
                continue
            iid = cand[a.identity]
            rows = np.flatnonzero(owner_idx == a.identity)
            best = rows[int(np.argmax(vecs[rows] @ q[a.face]))]
            faces.append(FaceRecognition(a.face, iid, names[iid], face_ids[best], a.score,
                                         tuple(per_face[a.face])))
        return Recognition(tuple(faces), model, thr)

    def _identity_vectors(self, s: Session, model: ModelRef, identity_ids: list[str],
                          ) -> tuple[np.ndarray, list[str], list[str]]:
        if self._index is not None:
            idx = self._index.get(_key(model))
            if idx is None:
                return np.zeros((0, 0), np.float32), [], []
            return idx.vectors_of(identity_ids)
        data = repo.identity_embeddings(s, model.id, model.version, identity_ids)
        return data.vectors, data.face_ids, data.identity_ids

    def _before_search(self, model: ModelRef, dim: int) -> None:
        repo.check_model_token(model.id, "model_id")
        repo.check_model_token(model.version, "model_version")
        self.sync()  # faces other processes enrolled or deleted since the last search
        if self._pg is not None and not self._pg.is_ready(_key(model), dim):
            # outside any session of ours: CREATE INDEX must not wait on us
            with self._read() as s:
                stored = repo.model_dim(s, model.id, model.version)
            if stored == dim:
                self._ensure_pg_index(_key(model), dim)

    def _k(self, k: int | None) -> int:
        k = self.settings.recognize_top_k if k is None else int(k)
        if not 1 <= k <= 100:
            raise InvalidInput("k must be in 1..100", k=k)
        return k

    def _threshold(self, model: ModelRef) -> float:
        if self._catalog is None:
            from facesocial.models.catalog import Catalog

            self._catalog = Catalog.load()
        try:
            spec = self._catalog.get(model.id)
        except UnknownModel:
            spec = None
        if spec is None or spec.thresholds is None:
            raise InvalidInput(f"model '{model.id}' has no calibrated threshold; pass one",
                               model=model.to_dict())
        return float(spec.thresholds.default)

    # ---------------------------------------------------------- operations
    def stats(self) -> list[dict[str, Any]]:
        """Faces and identities per model version (and the index mode in memory)."""
        self.sync()
        with self._read() as s:
            counts = repo.model_counts(s)
        modes = {(i.model_id, i.model_version): i.mode for i in
                 (self._index.stats() if self._index is not None else [])}
        return [{"model": {"id": c.model_id, "version": c.model_version}, "dim": c.dim,
                 "faces": c.faces, "identities": c.identities,
                 "search": modes.get((c.model_id, c.model_version), self.backend)}
                for c in counts]

    def consistency_check(self) -> ConsistencyReport:
        """Compare what search sees with what the database holds."""
        with self._write_lock:  # no write of this process in flight
            self.sync()
            if self._index is not None:
                return self._check_memory()
            return self._check_pg()

    def _check_memory(self) -> ConsistencyReport:
        assert self._index is not None
        report = ConsistencyReport(backend="memory")
        indexed: dict[str, tuple[ModelKey, str, np.ndarray]] = {}
        for key in self._index.keys():
            idx = self._index.get(key)
            if idx is None:
                continue
            for fid, (iid, vec) in idx.snapshot().items():
                if fid in indexed:
                    report.mismatched.append(fid)  # in two model indexes
                indexed[fid] = (key, iid, vec)
        report.faces_in_index = len(indexed)
        seen: set[str] = set()
        with self._read() as s:
            for fid, iid, mid, ver, vec in repo.iter_face_rows(s):
                seen.add(fid)
                got = indexed.get(fid)
                if got is None:
                    report.missing_in_index.append(fid)
                elif got[0] != (mid, ver) or got[1] != iid or got[2].shape != vec.shape or \
                        not np.allclose(got[2], vec, atol=VECTOR_ATOL):
                    report.mismatched.append(fid)
        report.faces_in_db = len(seen)
        report.extra_in_index = sorted(set(indexed) - seen)
        for st in self._index.stats():
            report.notes.append(f"{st.model_id}@{st.model_version}: {st.faces} faces, "
                                f"{st.identities} identities, {st.mode} search")
        if not report.ok:
            log.warning("gallery index disagrees with the database: %s", report.to_dict())
        return report

    def _check_pg(self) -> ConsistencyReport:
        assert self._pg is not None
        report = ConsistencyReport(backend="pgvector")
        with self._read() as s:
            counts = repo.model_counts(s)
            bad_dims = self._pg.dimension_problems(s)
            total = s.scalar(select(func.count()).select_from(Face)) or 0
        report.faces_in_db = report.faces_in_index = int(total)
        indexes = self._pg.indexes()
        for m, v, n in bad_dims:
            report.problems.append(f"{m}@{v}: {n} stored vectors differ from the dim column")
        by_model = {(i.model_id, i.model_version, i.dim): i for i in indexes}
        for c in counts:
            info = by_model.get((c.model_id, c.model_version, c.dim))
            if info is None:
                report.notes.append(f"{c.model_id}@{c.model_version}: no HNSW index yet "
                                    "(created on first search; exact scan until then)")
            elif not info.valid:
                report.problems.append(f"{c.model_id}@{c.model_version}: HNSW index "
                                       f"{info.name} is invalid")
            else:
                report.notes.append(f"{c.model_id}@{c.model_version}: {c.faces} faces, "
                                    f"HNSW index {info.name}")
        live = {(c.model_id, c.model_version, c.dim) for c in counts}
        for (m, v, d), info in by_model.items():
            if (m, v, d) not in live:
                report.notes.append(f"HNSW index {info.name} covers no faces "
                                    f"({m}@{v}, {d}-d)")
        return report

    def reindex_plan(self, new_model: ModelRef | tuple[str, str],
                     list_limit: int | None = 1000) -> ReindexPlan:
        """What changing the default embedding model to ``new_model`` requires.

        Faces of any other model id or version cannot be compared with the new
        model's embeddings and must be re-enrolled from source images: facesocial
        never keeps images, only each face's ``image_sha256``, which tells the
        operator which source file a face came from.
        """
        target = _key(new_model) if isinstance(new_model, ModelRef) else tuple(new_model)
        target = (str(target[0]), str(target[1]))
        with self._read() as s:
            counts = repo.model_counts(s)
            with_faces = s.scalar(select(func.count(func.distinct(Face.identity_id)))) or 0
            todo, todo_total = repo.identities_without_model(s, *target, limit=list_limit)
        models = tuple(ModelPlan(c.model_id, c.model_version, c.dim, c.faces, c.identities,
                                 "keep" if (c.model_id, c.model_version) == target
                                 else "re-enrol") for c in counts)
        to_redo = sum(m.faces for m in models if m.action == "re-enrol")
        ready = int(with_faces) - todo_total
        name = f"{target[0]}@{target[1]}"
        if to_redo == 0:
            steps = (f"Nothing to re-enrol: every face is already embedded by {name}.",)
        else:
            steps = (
                f"Install the new model: `facesocial models pull {target[0]}`.",
                f"Re-enrol {todo_total} identities that have no face embedded by {name} from "
                f"their source images, with {name} (images are not kept: each face's "
                "image_sha256 identifies its source file). Enrolling is idempotent, so an "
                "interrupted run can simply be repeated. Identities that already have "
                f"{name} faces ({ready}) may still want their other images re-enrolled.",
                f"Switch the default embedder (FACESOCIAL_EMBEDDER={target[0]}) and restart; "
                "until then, searches keep using the old model's faces.",
                "Check that searches with the new model find the expected identities, then "
                "delete the old faces with Gallery.purge_model(model_id, model_version) for: "
                + ", ".join(f"{m.model_id}@{m.model_version} ({m.faces} faces)"
                            for m in models if m.action == "re-enrol") + ".",
            )
            same_id = [f"{m.model_id}@{m.model_version}" for m in models
                       if m.action == "re-enrol" and m.model_id == target[0]]
            if same_id:
                steps += (f"Same model id, new version ({', '.join(same_id)}): a face is unique "
                          "per (identity, model id, image), so re-enrolling an image replaces "
                          "its old-version face in place and old-version searches stop finding "
                          "it; re-enrol in a maintenance window, or switch first.",)
            if self.backend == "pgvector":
                steps += ("PostgreSQL: the new model's HNSW index is created by the first "
                          "enrolment or search; purge_model drops the old one.",)
        return ReindexPlan(target=target, models=models, faces_to_reenrol=to_redo,
                           identities_with_faces=int(with_faces), identities_ready=ready,
                           identities_to_reenrol=tuple(todo),
                           identities_to_reenrol_total=todo_total, steps=steps)
