"""HTTP load on the real service: /face/detect and /face/analyze at 1, 4, 16 clients.

Starts ``python -m facesocial serve`` (SQLite, 127.0.0.1, a free port, admin
credentials in env; tests/e2e/server.py), logs in once, then for each endpoint
and concurrency level sends a fixed number of requests from N client threads
(one httpx.Client each) and prints requests/s, p50/p95 latency and errors.

Every request body is unique so the result cache (keyed by the image sha256)
never answers: the labelled photos of shared/testdata/faces are cycled and each
request gets one random pixel changed (then re-encoded as JPEG q95). All bodies
are built before the clock starts. Each endpoint is warmed with 3 requests first.

    /work/venv/bin/python bench/api_load.py [--quick] [--requests 40] [--levels 1,4,16]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import cv2
import httpx
import numpy as np
from _common import cpu_model, model_home

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.e2e.server import start_server  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "testdata" / "faces"
if not PHOTOS.is_dir():
    PHOTOS = Path("/work/shared/testdata/faces")


def load_photos() -> list[tuple[str, np.ndarray]]:
    out = []
    for p in sorted(PHOTOS.iterdir()):
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is not None:
            out.append((p.name, img))
    return out


def bodies(photos: list[tuple[str, np.ndarray]], n: int, rng: np.random.Generator,
           offset: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        name, img = photos[(offset + i) % len(photos)]
        im = img.copy()
        y, x = rng.integers(0, im.shape[0]), rng.integers(0, im.shape[1])
        im[y, x] = rng.integers(0, 256, 3, dtype=np.uint8)
        ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        out.append((name.rsplit(".", 1)[0] + ".jpg", buf.tobytes()))
    return out


def run_level(url: str, headers: dict[str, str], path: str, work: list[tuple[str, bytes]],
              clients: int) -> dict[str, float]:
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    it = iter(work)

    def worker() -> None:
        with httpx.Client(base_url=url + "/api/v1", headers=headers, timeout=300) as c:
            while True:
                with lock:
                    item = next(it, None)
                if item is None:
                    return
                name, data = item
                t0 = time.perf_counter()
                try:
                    r = c.post(path, files={"image": (name, data, "image/jpeg")})
                    ok = r.status_code == 200 and not r.json().get("cached", False)
                    err = None if ok else f"{r.status_code} {r.text[:120]}"
                except httpx.HTTPError as exc:
                    err = repr(exc)
                dt_ = time.perf_counter() - t0
                with lock:
                    lat.append(dt_)
                    if err:
                        errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    a = np.asarray(lat) * 1000
    if errors:
        print(f"    first error: {errors[0]}", file=sys.stderr)
    return {"n": len(lat), "wall": wall, "rps": len(lat) / wall, "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "errors": len(errors)}


def versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for pkg in ("facesocial", "onnxruntime", "fastapi", "uvicorn", "httpx", "numpy"):
        try:
            parts.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def cpu_name() -> str:
    return cpu_model()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="12 requests per level")
    ap.add_argument("--requests", type=int, default=40, help="requests per (endpoint, level)")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--endpoints", default="detect,analyze")
    ap.add_argument("--model-home", default=None, help="default: pulled from the mirror")
    ap.add_argument("--intra-op-threads", default="0", help="0: the product's default")
    ap.add_argument("--json", default=None, help="write the rows as JSON")
    args = ap.parse_args()
    n = 12 if args.quick else args.requests
    levels = [int(x) for x in args.levels.split(",")]
    endpoints = [e.strip() for e in args.endpoints.split(",")]

    import os
    print(f"# machine: {cpu_name()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}")
    print(f"# versions: {versions()}")
    print(f"# command: {' '.join([Path(sys.executable).as_posix(), *sys.argv])}")

    photos = load_photos()
    rng = np.random.default_rng(0)
    print(f"# inputs: {len(photos)} photos of {PHOTOS}, one random pixel changed per request "
          f"(every request a cache miss), {n} requests per level")

    work = Path(tempfile.mkdtemp(prefix="fs-apiload-"))
    server = start_server(work, model_home(args.model_home),
                          FACESOCIAL_INTRA_OP_THREADS=args.intra_op_threads,
                          FACESOCIAL_RATE_LIMIT_PER_MINUTE="1000000",
                          FACESOCIAL_RATE_LIMIT_FACE_PER_MINUTE="1000000")
    rows = []
    try:
        headers = server.auth()  # one login
        offset = 0
        for ep in endpoints:
            path = f"/face/{ep}"
            warm = run_level(server.url, headers, path, bodies(photos, 3, rng, offset), 1)
            offset += 3
            if warm["errors"]:
                raise RuntimeError(f"warm-up of {path} failed; see {server.log}")
            for c in levels:
                w = bodies(photos, n, rng, offset)
                offset += n
                res = run_level(server.url, headers, path, w, c)
                rows.append((path, c, res))
                print(f"  {path} clients={c}: {res['rps']:.2f} req/s p50 {res['p50']:.0f} ms "
                      f"p95 {res['p95']:.0f} ms errors {res['errors']}", flush=True)
    finally:
        server.stop()
        print(f"# server stopped (log {server.log}); load average after "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    if args.json:
        import json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": [
            {"endpoint": path, "clients": c, **r} for path, c, r in rows]}, indent=1))
    print()
    print("| endpoint | clients | requests | requests/s | p50 ms | p95 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for path, c, r in rows:
        print(f"| {path} | {c} | {r['n']} | {r['rps']:.2f} | {r['p50']:.0f} | {r['p95']:.0f} | "
              f"{r['errors']} |")


if __name__ == "__main__":
    main()
