"""Batch throughput: a 200-image job on the embedded executor, one Celery worker and two.

For each configuration a fresh deployment is started (the real API over loopback; for
Celery, real `facesocial worker` processes on the local Redis), warmed with a 4-image job
(models loaded in every process), then one job of N labelled face photos (the 20 photos of
shared/testdata/faces, cycled) runs with tasks detect,embed. Timed: the upload (multipart
POST until 202) and the processing (from 202 until the job is completed, polled every
0.1 s). Every item must be done with the labelled face count, or the run is refused.

Realtime under batch load: after the timed job, 20 `/face/detect` requests one after
another on the idle deployment, then the same while a second job (60 images) runs, so the
table shows what a batch costs the realtime requests of the same machine (the result cache
is off for the whole run, so every request is analysed).

Settings are the product's defaults (ONNX Runtime threads: its default; embedded executor:
1 thread; `facesocial worker`: 2 threads, niceness 10) unless given with --env.

    python bench/batch.py [--images 200] [--configs embedded,celery1,celery2]
                          [--model-home DIR] [--env FACESOCIAL_X=Y ...]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import fmt, machine_info, md_table, model_home, print_run_header

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.jobs.deployment import deploy, ndjson, upload, wait_job  # noqa: E402

SHARED = ROOT.parent / "shared"
DISTS = (("facesocial", "facesocial"), ("onnxruntime", "onnxruntime"), ("celery", "celery"),
         ("kombu", "kombu"), ("redis", "redis"), ("uvicorn", "uvicorn"))
CONFIGS = {  # name -> (executor, worker processes, threads per worker, extra settings)
    "embedded": ("embedded", 0, 0, {"FACESOCIAL_BATCH_WORKERS": "1"}),
    "embedded2": ("embedded", 0, 0, {"FACESOCIAL_BATCH_WORKERS": "2"}),
    "celery1": ("celery", 1, 2, {}),
    "celery2": ("celery", 2, 2, {}),
}


def labelled_photos() -> list[tuple[str, bytes, int]]:
    import json

    labels = json.loads((SHARED / "testdata" / "labels.json").read_text())
    return [(Path(n).name, (SHARED / "testdata" / n).read_bytes(), int(m["faces"]))
            for n, m in sorted(labels["faces"].items())]


def run(name: str, home: Path, photos: list[tuple[str, bytes, int]], n: int,
        extra_env: dict[str, str]) -> dict[str, Any]:
    executor, workers, threads, env = CONFIGS[name]
    env = {"FACESOCIAL_INTRA_OP_THREADS": "0", "FACESOCIAL_RESULT_CACHE_SIZE": "0", **env,
           **extra_env}
    items = [(f"{i:04d}_{photos[i % len(photos)][0]}", photos[i % len(photos)][1],
              photos[i % len(photos)][2]) for i in range(n)]
    dep = deploy(executor, Path(tempfile.mkdtemp(prefix=f"fs-bench-batch-{name}-")), home,
                 workers=workers, worker_concurrency=threads or 2, **env)
    try:
        with dep.client() as c:
            warm = c.post("/batch/submit", files=upload([(f"w{i}_{p[0]}", p[1])
                                                          for i, p in enumerate(photos[:4])]))
            assert wait_job(c, warm.json()["id"], timeout=600)["state"] == "completed"
            t0 = time.perf_counter()
            r = c.post("/batch/submit", files=upload([(nm, d) for nm, d, _ in items]),
                       data={"tasks": "detect,embed"})
            t1 = time.perf_counter()
            assert r.status_code == 202, r.text
            job = r.json()
            st = wait_job(c, job["id"], timeout=3600,
                          until=lambda s: s["state"] in ("completed", "failed", "cancelled"))
            t2 = time.perf_counter()
            records = ndjson(c, job["id"])
            idle = detect_ms(c, photos, PROBES)
            busy_job = c.post("/batch/submit", files=upload(
                [(f"b{i:03d}_{photos[i % len(photos)][0]}", photos[i % len(photos)][1])
                 for i in range(60)]), data={"tasks": "detect,embed"}).json()
            wait_job(c, busy_job["id"], timeout=600, until=lambda s: s["counts"]["done"] >= 2
                     or s["state"] in ("completed", "failed", "cancelled"))
            busy = detect_ms(c, photos, PROBES)
            busy_state = c.get(f"/batch/status/{busy_job['id']}").json()
            busy_ok = busy_state["state"] == "running"  # the job ran throughout the probes
            wait_job(c, busy_job["id"], timeout=600)
    finally:
        dep.stop()
    wrong = [r["name"] for r, it in zip(records, items, strict=True)
             if r["state"] != "done" or r["result"]["face_count"] != it[2]]
    if st["state"] != "completed" or wrong:
        raise RuntimeError(f"{name}: job {st['state']}, wrong items {wrong[:5]}")
    item_ms = sorted(r["result"]["item_ms"] for r in records)
    return {"name": name, "executor": executor, "workers": workers, "threads": threads
            or int(env.get("FACESOCIAL_BATCH_WORKERS", "1")), "images": n,
            "submit_s": t1 - t0, "process_s": t2 - t1, "ips": n / (t2 - t1),
            "item_ms_median": item_ms[len(item_ms) // 2],
            "detect_idle_ms": pct(idle), "detect_busy_ms": pct(busy),
            "busy_throughout": busy_ok}


PROBES = 20


def detect_ms(c: Any, photos: list[tuple[str, bytes, int]], n: int) -> list[float]:
    """``n`` /face/detect requests one after another; their round-trip times in ms."""
    out = []
    for i in range(n):
        name, data, _ = photos[i % len(photos)]
        t = time.perf_counter()
        r = c.post("/face/detect", files={"image": (name, data)})
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
    return out


def pct(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"p50": s[len(s) // 2], "p95": s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--configs", default="embedded,celery1,celery2")
    ap.add_argument("--model-home", default=None)
    ap.add_argument("--env", nargs="*", default=[], help="FACESOCIAL_X=Y settings for all")
    ap.add_argument("--quick", action="store_true", help="40 images, embedded and 1 worker")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.quick:
        args.images, args.configs = 40, "embedded,celery1"
    extra = dict(kv.split("=", 1) for kv in args.env)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    info = machine_info(command, DISTS)
    photos = labelled_photos()
    home = model_home(args.model_home)
    rows = []
    for name in args.configs.split(","):
        res = run(name, home, photos, args.images, extra)
        print(f"  {name}: {res['ips']:.2f} images/s ({res['process_s']:.1f} s)", flush=True)
        rows.append(res)
    base = rows[0]["ips"]
    print()
    print_run_header(info, command)
    print(f"- input: {args.images} photos (the {len(photos)} labelled face photos cycled), "
          "tasks detect,embed, one job per configuration after a 4-image warm-up job")
    print()
    print(md_table(
        ["configuration", "executor", "worker processes x threads", "upload s", "process s",
         "images/s", "median item ms", f"ratio vs {rows[0]['name']}"],
        [[r["name"], r["executor"], f"{r['workers'] or 'API'} x {r['threads']}",
          fmt(r["submit_s"], 2), fmt(r["process_s"], 1), fmt(r["ips"], 2),
          fmt(r["item_ms_median"], 0), fmt(r["ips"] / base, 2)] for r in rows]))
    print(f"\nRealtime under batch load: {PROBES} `/face/detect` requests one after another, "
          "idle and while a 60-image job runs (cache off).\n")
    print(md_table(
        ["configuration", "idle p50 ms", "idle p95 ms", "during batch p50 ms",
         "during batch p95 ms", "p50 ratio", "job ran throughout"],
        [[r["name"], fmt(r["detect_idle_ms"]["p50"], 0), fmt(r["detect_idle_ms"]["p95"], 0),
          fmt(r["detect_busy_ms"]["p50"], 0), fmt(r["detect_busy_ms"]["p95"], 0),
          fmt(r["detect_busy_ms"]["p50"] / r["detect_idle_ms"]["p50"], 2),
          "yes" if r["busy_throughout"] else "no (ended early)"] for r in rows]))
    if args.json:
        import json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
