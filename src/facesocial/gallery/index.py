"""In-process vector indexes, one per (model id, model version).

Small galleries are searched exactly (one matrix product); from
``settings.gallery_hnsw_min`` faces on, a usearch HNSW graph (int8, inner product of the
unit vectors, i.e. cosine) finds candidates and the exact scores re-rank them, so both
paths report identical similarities. Vectors are kept L2-normalised in a dense matrix
(swap-remove on delete) that also serves exact search and consistency checks. Every public
method is thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from sqlalchemy.orm import Session

from facesocial.errors import IncompatibleEmbeddings

log = logging.getLogger(__name__)

ModelKey = tuple[str, str]  # (model id, model version)

# HNSW parameters. The graph stores int8-quantised vectors (4x smaller and faster to build than
# f32) and only proposes candidates: the exact float32 scores re-rank them. Its metric is the
# inner product, which equals the cosine here (every stored vector and every query is
# L2-normalised first) and skips the cosine kernel's two norms per distance: on 20k clustered
# 512-d faces, the same recall as "cos", built ~1.7x and searched up to ~1.4x faster (2 busy cores).
# The i8 distances misorder near-ties (the near-orthogonal impostors after an identity's own
# faces), so the graph is asked for 10x the hits and all of them are re-ranked exactly: recall@10
# 0.936 -> 0.985 at expansion_search 256 (30k faces), for a re-rank of 100 rows (~0.1 ms).
#
# The search width grows with the gallery. bench/search.py, clustered galleries (1..20 faces per
# identity, queries = new faces of enrolled identities), recall@10 against exact search and, in
# brackets, "match recall" (the same-identity faces among the true top 10 that were found: what a
# 1:N identification can lose), one query at a time on 2 cores (BENCHMARKS.md, 2026-11-27):
#   100k faces: 0.955 / 0.978 / 0.993 / 0.998 at expansion_search 256 / 512 / 1024 / 2048
#   1M faces:   0.874 (0.9914) / 0.918 (0.9983) / 0.954 (0.99985) / 0.980 (1.0) / 0.993 (1.0)
#               at 512 / 1024 / 2048 / 4096 / 8128: 136 / 85 / 43 / 20 / 11 queries/s,
#               against 12.8 queries/s for the exact scan (one 2 GB matrix product per query).
# So the width is chosen for identification: 1024 up to 100k faces (recall@10 0.99 there too),
# then x2 per 10x faces (n^0.3: 2048 at 1M, every same-identity face but 1 in 7000 found, at 3.4x
# the exact scan's rate). The strict top 10 (the impostors behind an identity's own faces
# included) needs ~8k at 1M, where the graph is no faster than the exact scan: a deployment that
# wants it keeps `gallery_hnsw_min` above its gallery size. `gallery_hnsw_ef` (settings) or a
# fixed expansion_search passed to VectorIndex overrides the width.
HNSW_CONNECTIVITY = 32
HNSW_EXPANSION_ADD = 128
HNSW_EXPANSION_SEARCH = 1024  # at HNSW_EXPANSION_REF faces and below
HNSW_EXPANSION_REF = 100_000
HNSW_EXPANSION_GROWTH = 0.3  # x2 per 10x faces
HNSW_EXPANSION_MAX = 8192
HNSW_DTYPE = "i8"
HNSW_METRIC = "ip"  # on unit vectors: the cosine
HNSW_OVERSAMPLE = 10  # graph candidates per requested hit, re-ranked exactly
# below this many vectors per insert, the graph is built by one thread: deterministic (the
# same graph, the same recall, run after run) and, for small batches, no slower
HNSW_PARALLEL_ADD_MIN = 50_000
REBUILD_TOMBSTONE_RATIO = 0.5  # rebuild the graph when this share of it was removed


def expansion_for(n: int) -> int:
    """Default HNSW search width for ``n`` faces (see above)."""
    grow = max(1.0, n / HNSW_EXPANSION_REF) ** HNSW_EXPANSION_GROWTH
    return min(HNSW_EXPANSION_MAX, int(round(HNSW_EXPANSION_SEARCH * grow / 64)) * 64)


class FaceHit(NamedTuple):
    face_id: str
    identity_id: str
    score: float  # cosine similarity


@dataclass(frozen=True, slots=True)
class IndexStats:
    model_id: str
    model_version: str
    dim: int
    faces: int
    identities: int
    mode: str  # "exact" | "hnsw"


class VectorIndex:
    """Face embeddings of one model version: add, remove and k-nearest search."""

    def __init__(self, dim: int, hnsw_min: int, *, connectivity: int = HNSW_CONNECTIVITY,
                 expansion_add: int = HNSW_EXPANSION_ADD,
                 expansion_search: int | None = None) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        self.dim = dim
        self.hnsw_min = max(1, int(hnsw_min))
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self.expansion_search = expansion_search  # None: by size (search_width)
        self._lock = threading.RLock()
        self._vecs = np.zeros((16, dim), np.float32)
        self._face_ids: list[str] = []
        self._owners: list[str] = []
        self._pos: dict[str, int] = {}
        self._by_identity: dict[str, set[str]] = {}
        self._hnsw: object | None = None  # usearch.index.Index
        self._key_of: dict[str, int] = {}
        self._face_of_key: dict[int, str] = {}
        self._next_key = 0
        self._tombstones = 0

    # ---------------------------------------------------------------- state
    def __len__(self) -> int:
        return len(self._face_ids)

    def __contains__(self, face_id: object) -> bool:
        return face_id in self._pos

    @property
    def mode(self) -> str:
        return "hnsw" if self._hnsw is not None else "exact"

    def search_width(self) -> int:
        """The graph's expansion_search: the fixed one, else grown with the gallery's size."""
        if self.expansion_search is not None:
            return int(self.expansion_search)
        return expansion_for(len(self._face_ids))

    def identities(self) -> int:
        return len(self._by_identity)

    def snapshot(self) -> dict[str, tuple[str, np.ndarray]]:
        """face id -> (identity id, vector copy), for consistency checks."""
        with self._lock:
            return {f: (self._owners[i], self._vecs[i].copy()) for f, i in self._pos.items()}

    # ------------------------------------------------------------- mutation
    def _checked(self, vectors: np.ndarray) -> np.ndarray:
        """(n, dim) float32 rows, L2-normalised; raises before anything changes."""
        v = np.asarray(vectors, np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            got = int(v.shape[-1]) if v.ndim else 0
            raise IncompatibleEmbeddings(f"index holds {self.dim}-d vectors, got {got}-d",
                                         dim=self.dim, got=got)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms < 1e-6):
            raise ValueError("vectors must be finite and non-zero")
        return v / norms

    def add(self, face_id: str, identity_id: str, vec: np.ndarray) -> None:
        """Add (or replace) one face."""
        self.add_many([face_id], [identity_id], np.asarray(vec, np.float32).reshape(1, -1))

    def add_many(self, face_ids: list[str], identity_ids: list[str],
                 vectors: np.ndarray) -> None:
        """Add (or replace) several faces at once; the graph is built or extended once."""
        if not face_ids:
            return
        if len(set(face_ids)) != len(face_ids):
            raise ValueError("duplicate face ids in one batch")
        vectors = np.asarray(vectors, np.float32).reshape(len(face_ids), -1)
        checked = self._checked(vectors)  # all-or-nothing
        with self._lock:
            for fid in face_ids:
                if fid in self._pos:
                    self._remove_locked(fid)
            n0 = len(self._face_ids)
            need = n0 + len(face_ids)
            if need > len(self._vecs):
                grown = np.zeros((max(need, 2 * len(self._vecs)), self.dim), np.float32)
                grown[:n0] = self._vecs[:n0]
                self._vecs = grown
            self._vecs[n0:need] = checked
            for j, (fid, iid) in enumerate(zip(face_ids, identity_ids, strict=True)):
                self._pos[fid] = n0 + j
                self._face_ids.append(fid)
                self._owners.append(iid)
                self._by_identity.setdefault(iid, set()).add(fid)
            if self._hnsw is not None:
                self._graph_add(face_ids, checked)
            elif len(self._face_ids) >= self.hnsw_min:
                self._build_graph()

    def remove(self, face_id: str) -> bool:
        """Drop one face; False when it was not indexed."""
        with self._lock:
            if face_id not in self._pos:
                return False
            self._remove_locked(face_id)
            self._after_removal()
            return True

    def remove_identity(self, identity_id: str) -> int:
        """Drop every face of an identity; returns how many were dropped."""
        with self._lock:
            faces = list(self._by_identity.get(identity_id, ()))
            for fid in faces:
                self._remove_locked(fid)
            if faces:
                self._after_removal()
            return len(faces)

    def _remove_locked(self, face_id: str) -> None:
        i = self._pos.pop(face_id)
        owner = self._owners[i]
        last = len(self._face_ids) - 1
        if i != last:  # move the last row into the hole
            self._vecs[i] = self._vecs[last]
            moved = self._face_ids[last]
            self._face_ids[i] = moved
            self._owners[i] = self._owners[last]
            self._pos[moved] = i
        self._face_ids.pop()
        self._owners.pop()
        peers = self._by_identity.get(owner)
        if peers is not None:
            peers.discard(face_id)
            if not peers:
                del self._by_identity[owner]
        if self._hnsw is not None:
            key = self._key_of.pop(face_id)
            del self._face_of_key[key]
            self._hnsw.remove(key)  # type: ignore[attr-defined]
            self._tombstones += 1

    def _after_removal(self) -> None:
        n = len(self._face_ids)
        if self._hnsw is None:
            return
        if n < self.hnsw_min // 2:  # hysteresis: no flapping around the threshold
            log.info("index %d-d: %d faces, back to exact search", self.dim, n)
            self._drop_graph()
        elif self._tombstones > REBUILD_TOMBSTONE_RATIO * max(n, 1):
            self._build_graph()

    # ---------------------------------------------------------------- graph
    def _drop_graph(self) -> None:
        self._hnsw = None
        self._key_of.clear()
        self._face_of_key.clear()
        self._tombstones = 0

    def _build_graph(self) -> None:
        from usearch.index import Index

        self._drop_graph()
        self._hnsw = Index(ndim=self.dim, metric=HNSW_METRIC, dtype=HNSW_DTYPE,
                           connectivity=self.connectivity, expansion_add=self.expansion_add,
                           expansion_search=self.search_width())
        n = len(self._face_ids)
        log.info("index %d-d: building HNSW over %d faces", self.dim, n)
        self._graph_add(list(self._face_ids), self._vecs[:n])

    def _graph_add(self, face_ids: list[str], vectors: np.ndarray) -> None:
        keys = np.arange(self._next_key, self._next_key + len(face_ids), dtype=np.uint64)
        self._next_key += len(face_ids)
        for fid, key in zip(face_ids, keys.tolist(), strict=True):
            self._key_of[fid] = key
            self._face_of_key[key] = fid
        threads = 0 if len(face_ids) >= HNSW_PARALLEL_ADD_MIN else 1  # 0: all cores
        self._hnsw.add(keys, np.ascontiguousarray(vectors, np.float32),  # type: ignore[attr-defined]
                       threads=threads)

    # --------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int) -> list[list[FaceHit]]:
        """The ``k`` most similar faces to each query (L2-normalised inside), best first."""
        q = np.asarray(queries, np.float32)
        if q.ndim == 1:
            q = q.reshape(1, -1)
        if q.shape[1] != self.dim:
            raise IncompatibleEmbeddings(f"index holds {self.dim}-d vectors, got {q.shape[1]}-d",
                                         dim=self.dim, got=int(q.shape[1]))
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        with self._lock:
            n = len(self._face_ids)
            k = min(int(k), n)
            if k <= 0:
                return [[] for _ in range(len(q))]
            if self._hnsw is None or k * HNSW_OVERSAMPLE >= n:
                return self._exact(q, k)
            return self._graph(q, k)

    def _exact(self, q: np.ndarray, k: int) -> list[list[FaceHit]]:
        n = len(self._face_ids)
        sims = q @ self._vecs[:n].T
        if k < n:
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(n), (len(q), n))
        out: list[list[FaceHit]] = []
        for r in range(len(q)):
            cand = top[r]
            order = cand[np.argsort(-sims[r, cand], kind="stable")]
            out.append([FaceHit(self._face_ids[i], self._owners[i], float(sims[r, i]))
                        for i in order])
        return out

    def _graph(self, q: np.ndarray, k: int) -> list[list[FaceHit]]:
        want = min(len(self._face_ids), k * HNSW_OVERSAMPLE)
        hnsw = self._hnsw
        hnsw.expansion_search = max(self.search_width(), want)  # type: ignore[attr-defined]
        matches = hnsw.search(q, want)  # type: ignore[attr-defined]
        keys = np.asarray(matches.keys).reshape(len(q), -1)
        counts = np.asarray(getattr(matches, "counts", [keys.shape[1]] * len(q))).reshape(-1)
        out: list[list[FaceHit]] = []
        for r in range(len(q)):
            rows = [self._pos[self._face_of_key[int(key)]] for key in keys[r, :counts[r]]
                    if int(key) in self._face_of_key]
            if not rows:
                out.append([])
                continue
            idx = np.asarray(rows)
            sims = self._vecs[idx] @ q[r]
            order = np.argsort(-sims, kind="stable")[:k]
            out.append([FaceHit(self._face_ids[idx[j]], self._owners[idx[j]], float(sims[j]))
                        for j in order])
        return out

    def vectors_of(self, identity_ids: Iterable[str]) -> tuple[np.ndarray, list[str], list[str]]:
        """(vectors, face ids, owner ids) of the given identities' faces."""
        with self._lock:
            rows = [self._pos[f] for iid in dict.fromkeys(identity_ids)
                    for f in sorted(self._by_identity.get(iid, ()))]
            idx = np.asarray(rows, dtype=np.int64)
            return (self._vecs[idx].copy(), [self._face_ids[i] for i in rows],
                    [self._owners[i] for i in rows])


class GalleryIndex:
    """All per-model indexes of one gallery, rebuilt from the database at start."""

    def __init__(self, hnsw_min: int, expansion_search: int | None = None) -> None:
        self.hnsw_min = hnsw_min
        self.expansion_search = expansion_search or None  # None/0: by each index's size
        self._lock = threading.RLock()
        self._indexes: dict[ModelKey, VectorIndex] = {}

    @classmethod
    def from_repository(cls, session: Session, hnsw_min: int,
                        expansion_search: int | None = None) -> GalleryIndex:
        """Load every stored embedding, grouped by (model id, version)."""
        from facesocial.gallery import repository as repo

        index = cls(hnsw_min, expansion_search)
        for count in repo.model_counts(session):
            index.load(session, (count.model_id, count.model_version))
        return index

    def _new(self, dim: int) -> VectorIndex:
        return VectorIndex(dim, self.hnsw_min, expansion_search=self.expansion_search)

    def load(self, session: Session, key: ModelKey) -> None:
        """(Re)build one model's index from the database."""
        from facesocial.gallery import repository as repo

        data = repo.load_embeddings(session, *key)
        with self._lock:
            if not len(data):
                self._indexes.pop(key, None)
                return
            idx = self._new(data.vectors.shape[1])
            idx.add_many(data.face_ids, data.identity_ids, data.vectors)
            self._indexes[key] = idx
        log.info("gallery index %s@%s: %d faces (%s)", key[0], key[1], len(idx), idx.mode)

    def get(self, key: ModelKey) -> VectorIndex | None:
        with self._lock:
            idx = self._indexes.get(key)
            return idx if idx is not None and len(idx) else None

    def keys(self) -> list[ModelKey]:
        with self._lock:
            return [k for k, v in self._indexes.items() if len(v)]

    def add(self, key: ModelKey, face_id: str, identity_id: str, vec: np.ndarray) -> None:
        with self._lock:
            idx = self._indexes.get(key)
            if idx is None:
                idx = self._indexes[key] = self._new(int(np.asarray(vec).size))
        idx.add(face_id, identity_id, vec)

    def remove(self, key: ModelKey, face_id: str) -> bool:
        idx = self._indexes.get(key)
        return idx.remove(face_id) if idx is not None else False

    def remove_face(self, face_id: str) -> bool:
        """Drop a face from whichever model index holds it."""
        with self._lock:
            indexes = list(self._indexes.values())
        return any(idx.remove(face_id) for idx in indexes if face_id in idx)

    def remove_identity(self, identity_id: str) -> int:
        with self._lock:
            indexes = list(self._indexes.values())
        return sum(idx.remove_identity(identity_id) for idx in indexes)

    def drop(self, key: ModelKey) -> None:
        with self._lock:
            self._indexes.pop(key, None)

    def stats(self) -> list[IndexStats]:
        with self._lock:
            items = list(self._indexes.items())
        return [IndexStats(k[0], k[1], v.dim, len(v), v.identities(), v.mode)
                for k, v in items if len(v)]
