"""Micro-batching benchmark: faces per second with the model manager's batching off and on.

For the embedding model (``w600k_mbf_folded``, aligned 112x112 crops) and the
binary anti-spoofing model (``antispoof_binary``, 128x128 square crops), N
caller threads (N = 1, 2, 4, 8, 16, 32) each send ONE face per call through
``ModelManager.handle(id).run(x)`` for ``--duration`` seconds, against managers
built with ``Settings(batching=False)`` and ``Settings(batching=True,
batch_wait_ms=W)`` for W = 0, 2 (the default) and 5 ms, all in one run.

Per cell it reports faces/s, p50/p95 latency per call, the mean batch size
(from the manager's own metrics registry, histogram
``facesocial_model_batch_size``: rows / batched inferences during the cell) and
the process CPU use (CPU seconds / wall seconds: 2.0 = both cores busy) and
faces per CPU-second (the work a face costs, independent of the share of a
shared machine the process happened to get). The
ratio on/off is faces/s with batching on over faces/s with it off, at the same
concurrency.

Fairness on a shared machine: every manager of a model is loaded and warmed
before timing starts, and for each concurrency the configurations run back to
back in an order that rotates from one concurrency to the next, so a change
in machine load hits all of them alike. A cell's throughput is every face
completed divided by the time from the start barrier until the last caller
returned (callers stop sending after ``--duration``; calls in flight finish),
so a final partial batch is counted at its real cost.

A "kernel" table (the ONNX Runtime session called directly at batch 1, 8 and
32, no manager, with ``--threads`` intra-op threads and with 1) gives the wall
and CPU cost per face of batching itself on this CPU: what the manager's
micro-batching can at best turn into throughput.

Inputs: real faces by default: the photos of ``../shared/testdata/faces``,
detected with ``facesocial.engine.Engine`` (default detector), aligned with
``vision.alignment.align_faces`` (112 px, embedder) and cut with the
anti-spoofer's own ``square_crop`` (128 px), preprocessed as the adapters do;
``--random`` uses uniform random tensors instead.

Usage:
    python bench/batching.py [--duration 2.5] [--quick] [--json [OUT]]
                             [--model-dir DIR] [--threads 2] [--random]

``--json`` without a path writes bench/results/batching.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import cpu_model, dist_version, fmt, md_table, print_run_header  # noqa: F401

from facesocial.models.catalog import Catalog
from facesocial.models.manager import ModelManager
from facesocial.models.store import ModelStore
from facesocial.settings import Settings

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("FACESOCIAL_SHARED", REPO.parent / "shared")) / "testdata"
RESULTS = REPO / "bench" / "results"

EMBED, SPOOF = "w600k_mbf_folded", "antispoof_binary"
MODELS = (EMBED, SPOOF)
LEVELS = (1, 2, 4, 8, 16, 32)
WAITS = (0.0, 2.0, 5.0)
KERNEL_BATCHES_FULL = (1, 8, 32)


# --------------------------------------------------------------------- helpers
def machine_info(command: str) -> dict[str, Any]:
    cpu = cpu_model()

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu": cpu,
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "python": platform.python_version(),
        "versions": {d: version(d) for d in ("facesocial", "onnxruntime", "numpy",
                                             "prometheus-client")},
        "command": command,
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


# ---------------------------------------------------------------------- inputs
def face_inputs(model_dir: Path, threads: int) -> tuple[dict[str, list[np.ndarray]], str]:
    """Per model, a pool of (1, C, H, W) float32 tensors cut from real photos."""
    from facesocial.engine import Engine
    from facesocial.vision.alignment import align_faces
    from facesocial.vision.embedding import preprocess_arcface
    from facesocial.vision.liveness import CROP_SCALE, preprocess_antispoof, square_crop

    photos = sorted(p for p in (TESTDATA / "faces").glob("*")
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise SystemExit(f"no photos in {TESTDATA / 'faces'}; set FACESOCIAL_SHARED or use "
                         "--random")
    engine = Engine(Settings(model_dir=model_dir, device="cpu", intra_op_threads=threads,
                             batching=False))
    emb_spec = engine.catalog.get(EMBED)
    pre = emb_spec.extra.get("preprocess", {})
    mean, std = float(pre.get("mean", 127.5)), float(pre.get("std", 127.5))
    bgr = pre.get("color", "RGB") == "BGR"
    pools: dict[str, list[np.ndarray]] = {EMBED: [], SPOOF: []}
    try:
        for p in photos:
            rgb = engine.image(p)
            dets = engine.detect(rgb)
            if not len(dets):
                continue
            crops = align_faces(rgb, dets.landmarks, 112)
            x = preprocess_arcface(crops, mean, std, bgr)
            pools[EMBED] += [np.ascontiguousarray(x[i:i + 1]) for i in range(len(x))]
            sq = np.stack([square_crop(rgb, b, CROP_SCALE, 128) for b in dets.boxes])
            y = preprocess_antispoof(sq)
            pools[SPOOF] += [np.ascontiguousarray(y[i:i + 1]) for i in range(len(y))]
        detector = engine.detector().ref.id
    finally:
        engine.close()
    note = (f"real faces: {len(pools[EMBED])} faces from {len(photos)} photos in "
            f"{TESTDATA / 'faces'} (detector {detector}; ArcFace 112 px alignment for "
            f"{EMBED}, anti-spoofer square crop x{CROP_SCALE} at 128 px for {SPOOF})")
    return pools, note


def random_inputs(n: int = 32) -> tuple[dict[str, list[np.ndarray]], str]:
    rng = np.random.default_rng(0)
    pools = {
        EMBED: [rng.uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32) for _ in range(n)],
        SPOOF: [rng.uniform(0, 1, (1, 3, 128, 128)).astype(np.float32) for _ in range(n)],
    }
    return pools, f"random tensors: {n} per model, uniform in each model's input range"


# ------------------------------------------------------------------- managers
def build_manager(model_dir: Path, threads: int, batching: bool, wait_ms: float,
                  batch_max: int, concurrency: int) -> ModelManager:
    settings = Settings(model_dir=model_dir, device="cpu", intra_op_threads=threads,
                        batching=batching, batching_on_cpu=batching,  # CPU batching is off
                        batch_wait_ms=wait_ms, batch_max=batch_max,  # by default: measure it
                        model_concurrency=concurrency)
    catalog = Catalog.load()
    return ModelManager(settings, catalog, ModelStore(settings, catalog))


def batch_hist(mgr: ModelManager, model_id: str) -> tuple[float, float]:
    """(rows, batched inferences) so far from the manager's facesocial_model_batch_size."""
    rows = calls = 0.0
    for fam in mgr.metrics.registry.collect():
        if fam.name != "facesocial_model_batch_size":
            continue
        for s in fam.samples:
            if s.labels.get("model") != model_id:
                continue
            if s.name.endswith("_sum"):
                rows = s.value
            elif s.name.endswith("_count"):
                calls = s.value
    return rows, calls


def run_cell(mgr: ModelManager, model_id: str, pool: list[np.ndarray], threads: int,
             duration: float) -> dict[str, Any]:
    handle = mgr.handle(model_id)
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    stop = [math.inf]

    def worker(k: int) -> None:
        mine, i = lat[k], k
        barrier.wait()
        try:
            while time.perf_counter() < stop[0]:
                x = pool[i % len(pool)]
                i += threads
                t = time.perf_counter()
                out = handle.run(x)
                mine.append(time.perf_counter() - t)
                if len(out[0]) != 1:
                    raise AssertionError(f"expected 1 row back, got {len(out[0])}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    rows0, calls0 = batch_hist(mgr, model_id)
    stop[0] = time.perf_counter() + duration + 0.001
    cpu0 = time.process_time()
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    rows1, calls1 = batch_hist(mgr, model_id)
    if errors:
        raise RuntimeError(f"{model_id} x{threads}: {errors[0]!r}") from errors[0]
    flat = [x for per in lat for x in per]
    n_batches = calls1 - calls0
    return {
        "threads": threads,
        "faces": len(flat),
        "wall_s": round(wall, 3),
        "faces_per_s": len(flat) / wall,
        "p50_ms": percentile(flat, 50) * 1000,
        "p95_ms": percentile(flat, 95) * 1000,
        "mean_batch": (rows1 - rows0) / n_batches if n_batches else None,
        "batched_inferences": int(n_batches),
        "cpu_cores_busy": cpu / wall,
        "faces_per_cpu_s": len(flat) / cpu if cpu > 0 else None,
    }


def kernel_table(model_dir: Path, threads: int, pools: dict[str, list[np.ndarray]],
                 seconds: float, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    """Wall and CPU ms per face with the session called directly (no manager) at fixed batch
    sizes, with ``threads`` intra-op threads (and with 1, for comparison)."""
    out: list[dict[str, Any]] = []
    for thr in dict.fromkeys((threads, 1)):
        mgr = build_manager(model_dir, thr, False, 0.0, 32, 1)
        try:
            for mid in MODELS:
                pool = pools[mid]
                with mgr.use(mid) as model:
                    for b in batches:
                        x = np.concatenate([pool[i % len(pool)] for i in range(b)])
                        model.run(x)  # allocation for this shape
                        n, t0, c0 = 0, time.perf_counter(), time.process_time()
                        while n < 2 or time.perf_counter() - t0 < seconds:
                            model.run(x)
                            n += 1
                        wall = time.perf_counter() - t0
                        cpu = time.process_time() - c0
                        out.append({"model": mid, "intra_op_threads": thr, "batch": b,
                                    "calls": n, "ms_per_call": wall * 1000 / n,
                                    "ms_per_face": wall * 1000 / (n * b),
                                    "cpu_ms_per_face": cpu * 1000 / (n * b),
                                    "faces_per_s": n * b / wall, "cpu_cores_busy": cpu / wall})
        finally:
            mgr.close()
    return out


# ------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds of sending per cell (default 2.5; 1.5 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="concurrency 1, 8, 32 and batch_wait_ms 2 only; short cells")
    ap.add_argument("--json", nargs="?", const=str(RESULTS / "batching.json"), default=None,
                    metavar="OUT", help="write results as JSON (default path: %(const)s)")
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--model-concurrency", type=int, default=None,
                    help="Settings.model_concurrency (default: the settings default)")
    ap.add_argument("--batch-max", type=int, default=None,
                    help="Settings.batch_max (default: the settings default)")
    ap.add_argument("--random", action="store_true", help="random tensors, not real faces")
    ap.add_argument("--variant-levels", default="1,8,32",
                    help="concurrencies for the batch_wait_ms 0 and 5 variants "
                         "(wait 2 runs at every level)")
    args = ap.parse_args(argv)

    defaults = Settings()
    duration = args.duration or (1.5 if args.quick else 2.5)
    levels = (1, 8, 32) if args.quick else LEVELS
    waits = (2.0,) if args.quick else WAITS
    variant_levels = {int(v) for v in args.variant_levels.split(",") if v}
    concurrency = args.model_concurrency or defaults.model_concurrency
    batch_max = args.batch_max or defaults.batch_max
    model_dir = args.model_dir or (Path(os.environ["FACESOCIAL_MODEL_DIR"])
                                   if os.environ.get("FACESOCIAL_MODEL_DIR") else
                                   Path("/tmp/fs_home") if Path("/tmp/fs_home").is_dir()
                                   else defaults.model_dir)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(
        ["bench/batching.py", *argv])
    info = machine_info(command)

    t_start = time.perf_counter()
    pools, input_note = random_inputs() if args.random else face_inputs(model_dir, args.threads)
    configs = [("off", False, 0.0)] + [(f"on w={w:g}ms", True, w) for w in waits]

    print("# facesocial micro-batching benchmark\n")
    print_run_header(info, command)
    print(f"- inputs: {input_note}")
    print(f"- manager: device cpu, ONNX Runtime intra-op threads {args.threads}, "
          f"model_concurrency {concurrency}, batch_max {batch_max}; {duration:g} s of sending "
          f"per cell; each caller thread sends one face per call")
    print()

    kernel = kernel_table(model_dir, args.threads, pools, 0.6 if args.quick else 1.0,
                          (1, 32) if args.quick else KERNEL_BATCHES_FULL)
    print("## Kernel: the session called directly (no manager), per face by batch size\n")
    rows = []
    for k in kernel:
        base = next(b for b in kernel if b["model"] == k["model"]
                    and b["intra_op_threads"] == k["intra_op_threads"] and b["batch"] == 1)
        rows.append([k["model"], k["intra_op_threads"], k["batch"], fmt(k["ms_per_call"]),
                     fmt(k["ms_per_face"], 2), fmt(k["cpu_ms_per_face"], 2),
                     fmt(k["faces_per_s"]), fmt(k["cpu_cores_busy"], 2),
                     fmt(base["ms_per_face"] / k["ms_per_face"], 2),
                     fmt(base["cpu_ms_per_face"] / k["cpu_ms_per_face"], 2)])
    print(md_table(["model", "intra-op threads", "batch", "ms/call", "wall ms/face",
                    "CPU ms/face", "faces/s", "CPU cores busy", "wall speed-up vs batch 1",
                    "CPU saving vs batch 1"], rows))
    print()

    cells: list[dict[str, Any]] = []
    for mid in MODELS:
        managers = {name: build_manager(model_dir, args.threads, batching, w, batch_max,
                                        concurrency) for name, batching, w in configs}
        try:
            for name, mgr in managers.items():  # load and warm every manager before timing
                for x in pools[mid][:4]:
                    mgr.handle(mid).run(x)
                st = {s["id"]: s for s in mgr.status()}[mid]
                want = name != "off"
                if st["batched"] != want:
                    raise SystemExit(f"{mid} ({name}): manager batched={st['batched']}, "
                                     f"expected {want}")
            for li, n in enumerate(levels):
                names = [c[0] for c in configs
                         if c[2] == 2.0 or not c[1] or n in variant_levels or args.quick]
                k = li % len(names)
                for name in names[k:] + names[:k]:  # rotate the order across levels
                    cell = run_cell(managers[name], mid, pools[mid], n, duration)
                    cell.update(model=mid, config=name)
                    cells.append(cell)
                    print(f"# {mid:18s} {name:10s} x{n:<2d} {cell['faces_per_s']:7.1f} faces/s "
                          f"p50 {cell['p50_ms']:7.1f} ms  batch {fmt(cell['mean_batch'])}  "
                          f"cpu {cell['cpu_cores_busy']:.2f}", file=sys.stderr, flush=True)
        finally:
            for mgr in managers.values():
                mgr.close()

    by = {(c["model"], c["config"], c["threads"]): c for c in cells}
    print("## Batching off vs on (batch_wait_ms 2, the default)\n")
    rows = []
    for mid in MODELS:
        for n in levels:
            off, on = by.get((mid, "off", n)), by.get((mid, "on w=2ms", n))
            if not off or not on:
                continue
            rows.append([mid, n, fmt(off["faces_per_s"]), fmt(on["faces_per_s"]),
                         fmt(on["faces_per_s"] / off["faces_per_s"], 2),
                         fmt(off["p50_ms"]), fmt(off["p95_ms"]), fmt(on["p50_ms"]),
                         fmt(on["p95_ms"]), fmt(on["mean_batch"]),
                         f"{off['cpu_cores_busy']:.2f} / {on['cpu_cores_busy']:.2f}",
                         f"{fmt(off['faces_per_cpu_s'])} / {fmt(on['faces_per_cpu_s'])}"])
    print(md_table(["model", "callers", "off faces/s", "on faces/s", "ratio on/off",
                    "off p50 ms", "off p95 ms", "on p50 ms", "on p95 ms", "on mean batch",
                    "CPU cores busy off / on", "faces per CPU-s off / on"], rows))
    print()
    if len(waits) > 1:
        print("## batch_wait_ms variants (faces/s, ratio to off, mean batch, p50 ms)\n")
        rows = []
        for mid in MODELS:
            for n in levels:
                off = by.get((mid, "off", n))
                if not off:
                    continue
                row: list[Any] = [mid, n, fmt(off["faces_per_s"])]
                for w in waits:
                    c = by.get((mid, f"on w={w:g}ms", n))
                    if not c:
                        row.append("-")
                        continue
                    ratio = c["faces_per_s"] / off["faces_per_s"]
                    row.append(f"{c['faces_per_s']:.1f} ({ratio:.2f}x, b {fmt(c['mean_batch'])}, "
                               f"p50 {c['p50_ms']:.0f})")
                rows.append(row)
        print(md_table(["model", "callers", "off faces/s"]
                       + [f"on wait {w:g} ms" for w in waits], rows))
        print()

    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    info["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    print(f"- load average at end {', '.join(f'{x:.2f}' for x in info['loadavg_end'])}; "
          f"run took {info['elapsed_s']:.0f} s")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"machine": info, "inputs": input_note, "duration_s": duration,
               "intra_op_threads": args.threads, "model_concurrency": concurrency,
               "batch_max": batch_max, "levels": list(levels), "waits_ms": list(waits),
               "kernel": kernel, "cells": cells}
        out.write_text(json.dumps(doc, indent=1, default=float))
        print(f"- JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
