"""Gallery storage: identities and their enrolled face embeddings.

One function per operation, each taking an open :class:`~sqlalchemy.orm.Session`;
the caller owns the transaction (nothing here commits). Works unchanged on
SQLite and PostgreSQL. Vector search lives elsewhere (``index``, ``pgvector``);
:func:`load_embeddings` is what an in-process index is built from.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Select, and_, cast, delete, func, insert, literal, or_, select
from sqlalchemy.orm import Session

from facesocial.db.models import Face, GalleryChange, Identity, utcnow
from facesocial.errors import IncompatibleEmbeddings, InvalidInput, NotFound

MAX_PAGE = 500
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# model ids and versions end up as SQL literals in partial-index predicates (pgvector.py)
_MODEL_TOKEN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_META_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")

MetaValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing, plus the number of rows matching the filters."""

    items: list[Any]
    total: int
    offset: int
    limit: int


class AddOutcome(enum.StrEnum):
    CREATED = "created"
    EXISTING = "existing"  # same identity, model, version and image: nothing written
    REPLACED = "replaced"  # same identity, model and image, other version: re-embedded


@dataclass(frozen=True, slots=True)
class GalleryVectors:
    """All embeddings of one (model id, version): rows aligned across the three fields."""

    face_ids: list[str]
    identity_ids: list[str]
    vectors: np.ndarray  # (n, dim) float32

    def __len__(self) -> int:
        return len(self.face_ids)


@dataclass(frozen=True, slots=True)
class FaceRef:
    """Enough of a (deleted) face to drop it from a vector index."""

    face_id: str
    identity_id: str
    model_id: str
    model_version: str

    @classmethod
    def of(cls, face: Face) -> FaceRef:
        return cls(face.id, face.identity_id, face.model_id, face.model_version)


@dataclass(frozen=True, slots=True)
class ModelCount:
    model_id: str
    model_version: str
    dim: int
    faces: int
    identities: int


# --------------------------------------------------------------------- checks
def check_model_token(value: str, what: str) -> str:
    if not isinstance(value, str) or not _MODEL_TOKEN.match(value):
        raise InvalidInput(f"{what} must be 1-64 characters of letters, digits, '_', '.', '-'",
                           **{what: value})
    return value


def check_sha256(value: str) -> str:
    v = value.lower() if isinstance(value, str) else value
    if not isinstance(v, str) or not _SHA256.match(v):
        raise InvalidInput("image_sha256 must be 64 hex digits", image_sha256=value)
    return v


def normalize_vector(vec: Any) -> np.ndarray:
    """A finite, non-zero 1-d vector, returned L2-normalised float32."""
    arr = np.asarray(vec, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidInput("an embedding must be a non-empty 1-d vector", shape=list(arr.shape))
    if not np.all(np.isfinite(arr)):
        raise InvalidInput("an embedding must be finite")
    norm = float(np.linalg.norm(arr))
    if norm < 1e-6:
        raise InvalidInput("an embedding must not be zero")
    return arr / np.float32(norm)


# ----------------------------------------------------------------- identities
def create_identity(session: Session, name: str,
                    meta: Mapping[str, Any] | None = None) -> Identity:
    name = (name or "").strip()
    if not name or len(name) > 256:
        raise InvalidInput("an identity needs a name of 1-256 characters")
    ident = Identity(name=name, meta=dict(meta or {}))
    session.add(ident)
    session.flush()
    return ident


def get_identity(session: Session, identity_id: str, *, for_update: bool = False) -> Identity:
    stmt = select(Identity).where(Identity.id == identity_id)
    if for_update:
        stmt = stmt.with_for_update()
    ident = session.scalars(stmt).one_or_none()
    if ident is None:
        raise NotFound(f"identity '{identity_id}' not found", resource="identity",
                       id=identity_id)
    return ident


def delete_if_empty(session: Session, identity_ids: list[str],
                    created_by: Mapping[str, Any]) -> list[str]:
    """Delete those of ``identity_ids`` that have no face and whose metadata holds every
    ``created_by`` item (e.g. made by an import); returns the ids deleted.
    Each identity row is locked first, so a face being enrolled into it either committed
    before (and the identity stays) or fails on the foreign key after."""
    gone: list[str] = []
    for identity_id in dict.fromkeys(identity_ids):
        ident = session.scalars(select(Identity).where(Identity.id == identity_id)
                                .with_for_update()).one_or_none()
        if ident is None or any((ident.meta or {}).get(k) != v for k, v in created_by.items()):
            continue
        if session.scalar(select(func.count()).select_from(Face)
                          .where(Face.identity_id == identity_id)):
            continue
        session.execute(delete(Identity).where(Identity.id == identity_id),
                        execution_options={"synchronize_session": False})
        gone.append(identity_id)
    return gone


def find_identity_by_name(session: Session, name: str) -> Identity | None:
    """The oldest identity with exactly this name (None: there is none)."""
    return session.scalars(select(Identity).where(Identity.name == name)
                           .order_by(Identity.created_at, Identity.id).limit(1)).first()


def identity_names(session: Session, identity_ids: list[str]) -> dict[str, str]:
    """id -> name for those of ``identity_ids`` that exist."""
    out: dict[str, str] = {}
    ids = list(dict.fromkeys(identity_ids))
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        out.update(session.execute(
            select(Identity.id, Identity.name).where(Identity.id.in_(chunk))).all())
    return out


def face_counts(session: Session, identity_ids: list[str]) -> dict[str, int]:
    if not identity_ids:
        return {}
    rows = session.execute(select(Face.identity_id, func.count()).where(
        Face.identity_id.in_(identity_ids)).group_by(Face.identity_id)).all()
    return dict(rows)


def _meta_candidates(value: MetaValue) -> list[MetaValue]:
    """The JSON values a filter value stands for: a string from a query string may
    mean the string itself, a number or a boolean."""
    if isinstance(value, (bool, int, float)):
        return [value]
    text_value = str(value)
    out: list[MetaValue] = [text_value]
    try:
        number = float(text_value)
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        out.append(int(number) if number.is_integer() else number)
    if text_value.lower() in ("true", "false"):
        out.append(text_value.lower() == "true")
    return out


def _meta_condition(dialect: str, key: str, value: MetaValue) -> Any:
    """``metadata[key] == value``, typed: "3" matches 3 and "3", "true" matches true."""
    if not _META_KEY.match(key):
        raise InvalidInput("metadata keys in filters must be 1-64 letters, digits, '_' or '-'",
                           key=key)
    candidates = _meta_candidates(value)
    if dialect == "postgresql":  # jsonb containment compares typed JSON values
        from sqlalchemy.dialects.postgresql import JSONB

        return or_(*[Identity.meta.op("@>")(cast(literal(json.dumps({key: c})), JSONB))
                     for c in candidates])
    if dialect == "sqlite":
        path = f'$."{key}"'  # key is [A-Za-z0-9_-]: safe inside the JSON path
        jtype = func.json_type(Identity.meta, path)
        jval = func.json_extract(Identity.meta, path)
        conds = []
        for c in candidates:
            if isinstance(c, bool):
                conds.append(jtype == ("true" if c else "false"))
            elif isinstance(c, (int, float)):
                conds.append(and_(jtype.in_(("integer", "real")), jval == c))
            else:
                conds.append(and_(jtype == "text", jval == c))
        return or_(*conds)
    return Identity.meta[key].as_string() == str(value)


def list_identities(session: Session, *, offset: int = 0, limit: int = 50,
                    name_contains: str | None = None,
                    meta: Mapping[str, MetaValue] | None = None) -> Page:
    """Identities, oldest first, optionally filtered.

    ``name_contains`` is a case-insensitive substring (wildcards in it are
    literal); ``meta`` keeps identities whose metadata has every ``key=value``
    (a string value also matches the number or boolean it spells, so filters
    taken from a query string find ``{"n": 3}`` with ``n=3``).
    """
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"offset must be >= 0 and limit in 1..{MAX_PAGE}", offset=offset,
                           limit=limit)
    conds: list[Any] = []
    if name_contains:
        conds.append(Identity.name.icontains(name_contains, autoescape=True))
    dialect = session.get_bind().dialect.name
    for key, value in (meta or {}).items():
        conds.append(_meta_condition(dialect, key, value))
    total = session.scalar(select(func.count()).select_from(Identity).where(*conds)) or 0
    items = list(session.scalars(select(Identity).where(*conds)
                                 .order_by(Identity.created_at, Identity.id)
                                 .offset(offset).limit(limit)))
    return Page(items=items, total=int(total), offset=offset, limit=limit)


def update_identity(session: Session, identity_id: str, *, name: str | None = None,
                    meta: Mapping[str, Any] | None = None, merge_meta: bool = False) -> Identity:
    """Rename and/or set metadata (replace it, or merge keys when ``merge_meta``)."""
    ident = get_identity(session, identity_id)
    if name is not None:
        name = name.strip()
        if not name or len(name) > 256:
            raise InvalidInput("an identity needs a name of 1-256 characters")
        ident.name = name
    if meta is not None:
        ident.meta = {**ident.meta, **meta} if merge_meta else dict(meta)
    ident.updated_at = utcnow()
    session.flush()
    return ident


def delete_identity(session: Session, identity_id: str) -> list[FaceRef]:
    """Delete an identity and its faces; returns the deleted faces."""
    get_identity(session, identity_id, for_update=True)
    faces = [FaceRef(*row) for row in session.execute(
        select(Face.id, Face.identity_id, Face.model_id, Face.model_version)
        .where(Face.identity_id == identity_id))]
    nosync = {"synchronize_session": False}
    session.execute(delete(Face).where(Face.identity_id == identity_id), execution_options=nosync)
    session.execute(delete(Identity).where(Identity.id == identity_id), execution_options=nosync)
    log_changes(session, [f.face_id for f in faces])
    session.expire_all()
    return faces


# ---------------------------------------------------------------------- faces
def model_dim(session: Session, model_id: str, model_version: str) -> int | None:
    """The dimension of this model's stored embeddings (None: no face of it yet)."""
    return session.scalar(select(Face.dim).where(
        Face.model_id == model_id, Face.model_version == model_version).limit(1))


def add_face(session: Session, identity_id: str, *, embedding: Any, model_id: str,
             model_version: str, quality: float | None, image_sha256: str,
             ) -> tuple[Face, AddOutcome]:
    """Enrol one embedding for an identity; idempotent per (identity, model, image).

    A repeat with the same model version returns the stored face untouched.
    The schema keeps one face per (identity, model id, image), so a repeat
    with another *version* of the model replaces the stored embedding (this is
    what re-enrolment after a model upgrade does). The embedding is stored
    L2-normalised; every face of one model version must have the same dimension.
    """
    check_model_token(model_id, "model_id")
    check_model_token(model_version, "model_version")
    sha = check_sha256(image_sha256)
    vec = normalize_vector(embedding)
    if quality is not None and not np.isfinite(quality):
        raise InvalidInput("quality must be finite", quality=quality)
    get_identity(session, identity_id)
    dim = model_dim(session, model_id, model_version)
    if dim is not None and dim != vec.shape[0]:
        raise IncompatibleEmbeddings(
            f"model {model_id}@{model_version} has {dim}-d embeddings, got {vec.shape[0]}-d",
            model_id=model_id, model_version=model_version, dim=dim, got=int(vec.shape[0]))
    existing = session.scalars(select(Face).where(
        Face.identity_id == identity_id, Face.model_id == model_id,
        Face.image_sha256 == sha)).one_or_none()
    if existing is not None:
        if existing.model_version == model_version:
            return existing, AddOutcome.EXISTING
        existing.model_version = model_version
        existing.dim = int(vec.shape[0])
        existing.embedding = vec
        existing.quality = None if quality is None else float(quality)
        existing.created_at = utcnow()
        session.flush()
        log_changes(session, [existing.id])
        return existing, AddOutcome.REPLACED
    face = Face(identity_id=identity_id, model_id=model_id, model_version=model_version,
                dim=int(vec.shape[0]), embedding=vec,
                quality=None if quality is None else float(quality), image_sha256=sha)
    session.add(face)
    session.flush()
    log_changes(session, [face.id])
    return face, AddOutcome.CREATED


def get_face(session: Session, face_id: str) -> Face:
    face = session.get(Face, face_id)
    if face is None:
        raise NotFound(f"face '{face_id}' not found", resource="face", id=face_id)
    return face


def _faces_query(identity_id: str | None, model_id: str | None,
                 model_version: str | None) -> Select[tuple[Face]]:
    stmt = select(Face)
    if identity_id is not None:
        stmt = stmt.where(Face.identity_id == identity_id)
    if model_id is not None:
        stmt = stmt.where(Face.model_id == model_id)
    if model_version is not None:
        stmt = stmt.where(Face.model_version == model_version)
    return stmt


def list_faces(session: Session, *, identity_id: str | None = None,
               model_id: str | None = None, model_version: str | None = None,
               offset: int = 0, limit: int = 50) -> Page:
    """Faces, oldest first, optionally of one identity and/or one model."""
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"offset must be >= 0 and limit in 1..{MAX_PAGE}", offset=offset,
                           limit=limit)
    if identity_id is not None:
        get_identity(session, identity_id)
    stmt = _faces_query(identity_id, model_id, model_version)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = list(session.scalars(stmt.order_by(Face.created_at, Face.id)
                                 .offset(offset).limit(limit)))
    return Page(items=items, total=int(total), offset=offset, limit=limit)


def delete_face(session: Session, face_id: str) -> FaceRef:
    """Delete one face; returns what an index needs to drop it too."""
    face = get_face(session, face_id)
    ref = FaceRef.of(face)
    session.delete(face)
    session.flush()
    log_changes(session, [ref.face_id])
    return ref


def delete_model_faces(session: Session, model_id: str, model_version: str) -> list[FaceRef]:
    """Delete every face of one model version (after re-enrolment); returns them."""
    faces = [FaceRef(*row) for row in session.execute(
        select(Face.id, Face.identity_id, Face.model_id, Face.model_version)
        .where(Face.model_id == model_id, Face.model_version == model_version))]
    session.execute(delete(Face).where(Face.model_id == model_id,
                                       Face.model_version == model_version),
                    execution_options={"synchronize_session": False})
    log_changes(session, [f.face_id for f in faces])
    session.expire_all()
    return faces


def iter_face_rows(session: Session, model_id: str | None = None,
                   model_version: str | None = None, batch: int = 2000,
                   ) -> Iterator[tuple[str, str, str, str, np.ndarray]]:
    """(face id, identity id, model id, version, vector) for every face, streamed."""
    stmt = select(Face.id, Face.identity_id, Face.model_id, Face.model_version, Face.embedding)
    if model_id is not None:
        stmt = stmt.where(Face.model_id == model_id)
    if model_version is not None:
        stmt = stmt.where(Face.model_version == model_version)
    result = session.execute(stmt.order_by(Face.id).execution_options(yield_per=batch))
    yield from result


def load_embeddings(session: Session, model_id: str, model_version: str) -> GalleryVectors:
    """Every embedding of one (model id, version), for building a vector index."""
    face_ids: list[str] = []
    owners: list[str] = []
    vecs: list[np.ndarray] = []
    for fid, iid, _m, _v, vec in iter_face_rows(session, model_id, model_version):
        face_ids.append(fid)
        owners.append(iid)
        vecs.append(vec)
    dim = len(vecs[0]) if vecs else 0
    matrix = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
    return GalleryVectors(face_ids, owners, matrix)


def identity_embeddings(session: Session, model_id: str, model_version: str,
                        identity_ids: list[str]) -> GalleryVectors:
    """The embeddings of one model held by the given identities."""
    face_ids: list[str] = []
    owners: list[str] = []
    vecs: list[np.ndarray] = []
    ids = list(dict.fromkeys(identity_ids))
    for i in range(0, len(ids), 500):
        rows = session.execute(select(Face.id, Face.identity_id, Face.embedding).where(
            Face.model_id == model_id, Face.model_version == model_version,
            Face.identity_id.in_(ids[i:i + 500])).order_by(Face.id))
        for fid, iid, vec in rows:
            face_ids.append(fid)
            owners.append(iid)
            vecs.append(vec)
    matrix = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, 0), np.float32)
    return GalleryVectors(face_ids, owners, matrix)


def has_faces(session: Session, model_id: str, model_version: str) -> bool:
    return session.scalar(select(Face.id).where(
        Face.model_id == model_id, Face.model_version == model_version).limit(1)) is not None


def model_counts(session: Session) -> list[ModelCount]:
    """Faces and identities per (model id, version), largest first."""
    rows = session.execute(
        select(Face.model_id, Face.model_version, func.max(Face.dim), func.count(),
               func.count(func.distinct(Face.identity_id)))
        .group_by(Face.model_id, Face.model_version)).all()
    out = [ModelCount(m, v, int(d), int(n), int(k)) for m, v, d, n, k in rows]
    return sorted(out, key=lambda c: (-c.faces, c.model_id, c.model_version))


def identities_without_model(session: Session, model_id: str, model_version: str,
                             limit: int | None = None) -> tuple[list[str], int]:
    """Identities that have faces but none of this model version: (ids, total count)."""
    has_target = select(Face.identity_id).where(
        Face.model_id == model_id, Face.model_version == model_version)
    base = select(Face.identity_id).where(Face.identity_id.not_in(has_target)).distinct()
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    stmt = base.order_by(Face.identity_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt)), int(total)


# ---------------------------------------------------------------- change log
def log_changes(session: Session, face_ids: list[str]) -> None:
    """Record that these faces were written or deleted, in this transaction.

    Processes holding an in-process index replay the log (:func:`changes_since`)
    to pick up writes made by other processes (workers, other API processes).
    """
    ids = list(dict.fromkeys(face_ids))
    now = utcnow()
    for i in range(0, len(ids), 1000):
        session.execute(insert(GalleryChange), [{"face_id": f, "at": now}
                                                for f in ids[i:i + 1000]])


def change_bounds(session: Session) -> tuple[int, int]:
    """(oldest, newest) sequence number in the change log; (0, 0) when it is empty."""
    lo, hi = session.execute(select(func.min(GalleryChange.seq),
                                    func.max(GalleryChange.seq))).one()
    return int(lo or 0), int(hi or 0)


def changes_since(session: Session, seq: int, limit: int) -> list[tuple[int, str]]:
    """(seq, face id) of the changes after ``seq``, oldest first, at most ``limit``."""
    rows = session.execute(select(GalleryChange.seq, GalleryChange.face_id)
                           .where(GalleryChange.seq > seq).order_by(GalleryChange.seq)
                           .limit(limit))
    return [(int(s), f) for s, f in rows]


def face_rows(session: Session, face_ids: list[str],
              ) -> dict[str, tuple[str, str, str, np.ndarray]]:
    """face id -> (identity id, model id, version, vector) for the faces that exist."""
    out: dict[str, tuple[str, str, str, np.ndarray]] = {}
    for i in range(0, len(face_ids), 500):
        for fid, iid, mid, ver, vec in session.execute(
                select(Face.id, Face.identity_id, Face.model_id, Face.model_version,
                       Face.embedding).where(Face.id.in_(face_ids[i:i + 500]))):
            out[fid] = (iid, mid, ver, vec)
    return out


def prune_changes(session: Session, before: Any) -> int:
    """Forget changes recorded before ``before``; readers that had not seen them rebuild."""
    result = session.execute(delete(GalleryChange).where(GalleryChange.at < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
