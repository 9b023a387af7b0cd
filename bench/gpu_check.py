"""GPU check: every installed ONNX model loaded on CUDA through the ModelManager, one by one.

For each installed ONNX model of the catalog (``.onnx`` file, installed in the
model home or carried by a pip package), in catalog order:

1. NVML free/used device memory is read, the model is loaded by a
   ``ModelManager`` built with ``Settings(device="cuda")`` (so through the
   manager's own ``_build``: CUDA provider options ``gpu_mem_limit`` = the
   model's zone budget (at least its charged footprint) and ``arena_extend_strategy``
   ``kSameAsRequested``, warm-up, NVML measurement), and NVML is read again;
2. the manager's ``measured_mb`` (NVML growth across session creation and
   warm-up), the NVML free-memory drop, and the catalog estimate
   (``manager.estimate_mb``: 2 x file size + 24 MiB) are recorded, with the
   CUDA provider options the session really got
   (``InferenceSession.get_provider_options()``);
3. throughput (rows per second) is timed at batch 1 and, where the model's
   input has a free batch dimension, at batch 16, on CUDA and then on CPU
   (a second manager with ``device="cpu"``), with random inputs of the
   model's declared shape (free height/width: ``--det-size``, default 640);
4. NVML is read after the runs (arena growth at batch 16) and after the model
   is unloaded (memory not given back).

Before the loop a tiny Conv + MatMul graph is run on CUDA so that the CUDA
context and the cuDNN/cuBLAS start-up are not charged to the first model; its
cost is reported on its own. NVML reads the whole card: run it on an otherwise
idle GPU.

Usage, on a machine with an NVIDIA GPU:

    pip uninstall -y onnxruntime          # the CPU build shadows the GPU build
    pip install onnxruntime-gpu nvidia-ml-py      # or: pip install -e '.[gpu]'
    # (without a system CUDA 12 / cuDNN 9: pip install 'onnxruntime-gpu[cuda,cudnn]')
    FACESOCIAL_MODEL_DIR=/path/to/models facesocial models pull --from ../shared/models
    python bench/gpu_check.py [--model-dir DIR] [--gpu 0] [--duration 1.0]
                              [--models id,id] [--det-size 640] [--json [OUT]]

Without a GPU, ``--dry-run-cpu`` runs the same loop with device ``"sim"`` (the
simulated GPU: sessions on CPU, memory from the manager's accounting and RSS),
to test the script itself.

Exit status: 0 every model loaded and ran on CUDA; 1 a model fell back to CPU
or failed; 2 no GPU, no CUDA provider in onnxruntime or no nvidia-ml-py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import cpu_model, dist_version, fmt, md_table  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
HOW_TO = """\
How to run it (on a machine with an NVIDIA GPU and driver):
    pip uninstall -y onnxruntime                 # the CPU build shadows the GPU build
    pip install onnxruntime-gpu nvidia-ml-py     # or: pip install -e '.[gpu]'
    # without a system CUDA 12 / cuDNN 9: pip install 'onnxruntime-gpu[cuda,cudnn]'
    python bench/gpu_check.py --model-dir DIR
To test the script without a GPU: python bench/gpu_check.py --dry-run-cpu"""

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
           "tensor(double)": np.float64, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
           "tensor(int32)": np.int32, "tensor(int64)": np.int64}


class NoGpu(Exception):
    """No usable CUDA device: the check cannot run (exit 2)."""


# --------------------------------------------------------------------- helpers
def machine_info(command: str) -> dict[str, Any]:
    cpu = cpu_model()
    return {
        "cpu": cpu, "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "python": platform.python_version(),
        "versions": {d: dist_version(d) for d in ("facesocial", "onnxruntime", "onnxruntime-gpu",
                                                  "nvidia-ml-py", "numpy")},
        "command": command,
    }


# ------------------------------------------------------------------- preflight
def preflight(gpu_index: int) -> dict[str, Any]:
    """Check for a CUDA-capable onnxruntime, nvidia-ml-py and a GPU; raise NoGpu if not."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise NoGpu(f"onnxruntime is not importable: {exc}") from exc
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        both = (dist_version("onnxruntime") != "not installed"
                and dist_version("onnxruntime-gpu") != "not installed")
        hint = (" Both 'onnxruntime' and 'onnxruntime-gpu' are installed and the CPU build "
                "wins: pip uninstall -y onnxruntime onnxruntime-gpu && pip install "
                "onnxruntime-gpu." if both else "")
        raise NoGpu(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                    f"(available: {', '.join(providers)}).{hint}")
    try:
        import pynvml
    except ImportError as exc:
        raise NoGpu("nvidia-ml-py is not installed (module pynvml): pip install nvidia-ml-py"
                    ) from exc
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception as exc:  # noqa: BLE001 - NVML raises its own error types
        raise NoGpu(f"NVML could not start (no NVIDIA driver or GPU?): {exc}") from exc
    if gpu_index >= count:
        raise NoGpu(f"GPU index {gpu_index} asked for; NVML sees {count} GPU(s)")
    h = pynvml.nvmlDeviceGetHandleByIndex(gpu_index)

    def text(x: Any) -> str:
        return x.decode() if isinstance(x, bytes) else str(x)

    mem = pynvml.nvmlDeviceGetMemoryInfo(h)
    info = {"gpu": text(pynvml.nvmlDeviceGetName(h)), "gpu_index": gpu_index,
            "driver": text(pynvml.nvmlSystemGetDriverVersion()),
            "gpu_total_mb": round(mem.total / 2**20, 1), "gpu_free_mb_start":
            round(mem.free / 2**20, 1), "providers": providers}
    try:
        v = pynvml.nvmlSystemGetCudaDriverVersion()
        info["cuda_driver"] = f"{v // 1000}.{(v % 1000) // 10}"
    except Exception:  # noqa: BLE001 - informative only
        pass
    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* pip wheels, if present
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - system libraries may still be found
            pass
    return info


def _primer_model() -> bytes:
    """A tiny Conv -> Relu -> Flatten -> MatMul graph (starts cuDNN and cuBLAS)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    m = numpy_helper.from_array(rng.standard_normal((4 * 6 * 6, 4)).astype(np.float32), "m")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("MatMul", ["f", "m"], ["y"])]
    graph = helper.make_graph(
        nodes, "primer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w, m])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)
    return model.SerializeToString()


def start_cuda(gpu_index: int, used_mb: Any) -> tuple[Any, dict[str, Any]]:
    """Create the CUDA context (and cuDNN/cuBLAS) before any model; keep the session alive."""
    import onnxruntime as ort

    before = used_mb()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(
        _primer_model(), sess_options=opts,
        providers=[("CUDAExecutionProvider", {"device_id": gpu_index}), "CPUExecutionProvider"])
    if sess.get_providers()[0] != "CUDAExecutionProvider":
        raise NoGpu("onnxruntime lists CUDAExecutionProvider but could not start it (CUDA 12 / "
                    "cuDNN 9 libraries not found?); session providers: "
                    f"{sess.get_providers()}. Try: pip install 'onnxruntime-gpu[cuda,cudnn]'")
    sess.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})
    return sess, {"cuda_context_mb": round(used_mb() - before, 1)}


# ---------------------------------------------------------------- measurement
def input_feed(model: Any, batch: int, det_size: int) -> dict[str, np.ndarray] | None:
    """Random inputs of the declared shapes at ``batch``; None when the batch is fixed."""
    rng = np.random.default_rng(0)
    feed = {}
    for inp in model.session.get_inputs():
        shape = list(inp.shape)
        if not shape:
            return None
        b0 = shape[0]
        if isinstance(b0, int) and b0 > 0 and b0 != batch:
            return None  # fixed batch dimension
        dims = [batch] + [d if isinstance(d, int) and d > 0 else det_size for d in shape[1:]]
        dtype = _DTYPES.get(inp.type, np.float32)
        if np.issubdtype(dtype, np.floating):
            feed[inp.name] = rng.uniform(0, 1, dims).astype(dtype)
        else:
            feed[inp.name] = rng.integers(0, 127, dims).astype(dtype)
    return feed


def throughput(model: Any, feed: dict[str, np.ndarray], seconds: float) -> dict[str, Any]:
    batch = len(next(iter(feed.values())))
    try:
        model.run(feed)  # allocation and algorithm search for this shape
        model.run(feed)
        n, t0 = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - t0 < seconds:
            model.run(feed)
            n += 1
        per_call = (time.perf_counter() - t0) / n
    except Exception as exc:  # noqa: BLE001 - e.g. the arena cap reached at batch 16
        return {"batch": batch, "error": str(exc).strip().splitlines()[0][:300]}
    return {"batch": batch, "calls": n, "ms_per_call": round(per_call * 1000, 3),
            "per_s": round(batch / per_call, 1)}


def bench_model(model: Any, det_size: int, seconds: float,
                batches: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for b in batches:
        feed = input_feed(model, b, det_size)
        out[f"b{b}"] = None if feed is None else throughput(model, feed, seconds)
    return out


def cuda_options(model: Any) -> dict[str, str]:
    try:
        return dict(model.session.get_provider_options().get("CUDAExecutionProvider", {}))
    except Exception:  # noqa: BLE001 - informative only
        return {}


# ------------------------------------------------------------------------ main
def run(args: argparse.Namespace, command: str) -> int:
    from facesocial.models.catalog import Catalog
    from facesocial.models.devices import MiB
    from facesocial.models.manager import ModelManager, estimate_mb, policy_for
    from facesocial.models.store import ModelStore
    from facesocial.settings import Settings

    dry = args.dry_run_cpu
    info = machine_info(command)
    gpu_info: dict[str, Any] = {}
    if not dry:
        gpu_info = preflight(args.gpu)  # raises NoGpu
    model_dir = args.model_dir or (Path(os.environ["FACESOCIAL_MODEL_DIR"])
                                   if os.environ.get("FACESOCIAL_MODEL_DIR") else
                                   Path("/tmp/fs_home") if Path("/tmp/fs_home").is_dir()
                                   else Settings().model_dir)
    common = {"model_dir": model_dir, "batching": False, "warmup": True,
              "load_timeout_s": args.load_timeout}
    settings = Settings(device="sim" if dry else "cuda", gpu_index=args.gpu, **common)
    cpu_settings = Settings(device="cpu", intra_op_threads=args.cpu_threads, **common)
    catalog = Catalog.load()
    store = ModelStore(settings, catalog)

    primer = None
    if not dry:
        from facesocial.models.devices import NvmlGpu

        probe = NvmlGpu(args.gpu)
        primer, start = start_cuda(args.gpu, probe.used_mb)
        gpu_info.update(start)
    mgr = ModelManager(settings, catalog, store)  # device "cuda": NvmlGpu; "sim": SimulatedGpu
    cpu_mgr = ModelManager(cpu_settings, catalog, ModelStore(cpu_settings, catalog))
    dev = mgr.device
    if dev is None:
        raise NoGpu("the model manager found no device")
    if not dry and dev.simulated:
        raise NoGpu("the model manager built a simulated device for device='cuda'")

    wanted = [m for m in (args.models.split(",") if args.models else []) if m]
    specs = [s for s in catalog if s.file and str(s.file).endswith(".onnx")
             and (not wanted or s.id in wanted)]
    skipped = [s.id for s in specs if not store.is_installed(s.id)]
    specs = [s for s in specs if store.is_installed(s.id)]
    batches = (1, 16)

    print(f"# facesocial GPU check{' (DRY RUN: device sim, sessions on CPU)' if dry else ''}\n")
    print(f"- machine: {info['cpu']}, {info['cores_usable']} usable cores")
    if gpu_info:
        print(f"- GPU {gpu_info['gpu_index']}: {gpu_info['gpu']}, "
              f"{gpu_info['gpu_total_mb']:.0f} MiB, driver {gpu_info['driver']}"
              f"{', CUDA ' + gpu_info['cuda_driver'] if 'cuda_driver' in gpu_info else ''}; "
              f"CUDA context + cuDNN/cuBLAS start-up {gpu_info['cuda_context_mb']} MiB "
              "(charged to no model)")
    print(f"- device of the manager: {dev.name} (simulated: {dev.simulated}); budget "
          f"{mgr.budget_mb:.0f} MiB")
    print(f"- date: {info['date_utc']}")
    print("- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
          + f", Python {info['python']}")
    print(f"- command: `{command}`")
    print(f"- model home {model_dir}; {len(specs)} installed ONNX models"
          + (f"; not installed: {', '.join(skipped)}" if skipped else ""))
    print(f"- throughput: random inputs, free height/width {args.det_size}, "
          f"{args.duration:g} s per point; CPU: ONNX Runtime intra-op threads "
          f"{args.cpu_threads or 'default'}\n")

    rows: list[dict[str, Any]] = []
    failed = 0
    for spec in specs:
        pol = policy_for(spec)
        row: dict[str, Any] = {"id": spec.id, "task": spec.task, "zone": pol.zone,
                               "file_mb": round(spec.bytes / MiB, 2),
                               "estimate_mb": estimate_mb(spec),
                               "policy_estimated_mb": pol.estimated_mb,
                               "batch_dependent": bool(spec.extra.get("batch_dependent", False))}
        # the manager's arena cap on a first load: charged = the estimate (nothing measured yet)
        row["arena_cap_mb_expected"] = max(mgr.zone_budget[pol.zone], pol.estimated_mb)
        gc.collect()
        free0 = dev.free_mb()
        try:
            st = mgr.load(spec.id)
        except Exception as exc:  # noqa: BLE001 - recorded, the loop goes on
            row["error"] = f"load: {exc}"
            rows.append(row)
            failed += 1
            print(f"# {spec.id}: load failed: {exc}", file=sys.stderr)
            continue
        free1 = dev.free_mb()
        row.update(placed=st["device"], measured_mb=st["measured_mb"],
                   charged_mb=st["charged_mb"], load_ms=st["load_ms"],
                   fallbacks=st["fallbacks"], version=st["version"],
                   device_drop_load_mb=round(free0 - free1, 1))
        on_device = st["device"] == dev.name
        if not on_device:
            row["error"] = f"placed on {st['device']}, not {dev.name}"
            failed += 1
        with mgr.use(spec.id) as model:
            row["session_providers"] = list(model.session.get_providers())
            row["cuda_options"] = {k: v for k, v in cuda_options(model).items()
                                   if k in ("device_id", "gpu_mem_limit",
                                            "arena_extend_strategy")}
            row["input_shape"] = [d if isinstance(d, int) else str(d)
                                  for d in model.session.get_inputs()[0].shape]
            row["device_perf"] = bench_model(model, args.det_size, args.duration, batches)
        del model  # the session must have no reference left when the manager unloads it
        row["device_drop_after_runs_mb"] = round(free0 - dev.free_mb(), 1)
        try:
            cpu_mgr.load(spec.id)
            with cpu_mgr.use(spec.id) as model:
                row["cpu_perf"] = bench_model(model, args.det_size, args.duration, batches)
            del model
        except Exception as exc:  # noqa: BLE001
            row["cpu_perf"] = {"error": str(exc)[:300]}
        finally:
            cpu_mgr.unload(spec.id)
        mgr.unload(spec.id)
        gc.collect()
        row["device_not_returned_mb"] = round(free0 - dev.free_mb(), 1)
        for b in batches:
            d, c = row["device_perf"].get(f"b{b}"), row["cpu_perf"].get(f"b{b}")
            if d and "error" in d:
                row.setdefault("run_errors", []).append(f"device b{b}: {d['error']}")
            if d and c and "per_s" in d and "per_s" in c:
                row[f"speedup_b{b}"] = round(d["per_s"] / c["per_s"], 2)
        if row.get("run_errors") and "error" not in row:
            failed += 1
        rows.append(row)
        print(f"# {spec.id}: {row.get('placed')} measured {row.get('measured_mb')} MiB, "
              f"device drop {row.get('device_drop_load_mb')} MiB, "
              f"b1 {(row['device_perf'].get('b1') or {}).get('per_s')}/s",
              file=sys.stderr, flush=True)

    def perf(r: dict[str, Any], where: str, b: int) -> str:
        p = (r.get(where) or {}).get(f"b{b}")
        if p is None:
            return "fixed" if where in r else "-"
        return "error" if "error" in p else fmt(p["per_s"])

    mem_word = "sim accounting" if dry else "NVML"
    table = []
    for r in rows:
        cap = r.get("cuda_options", {}).get("gpu_mem_limit")
        cap_txt = (f"{int(cap) / MiB:.0f}" if cap and str(cap).isdigit() and int(cap) < 2**60
                   else f"({r['arena_cap_mb_expected']:.0f})")
        ratio = (r["measured_mb"] / r["estimate_mb"]) if r.get("measured_mb") else None
        note = "; ".join(x for x in [r.get("error", ""), *r.get("run_errors", []),
                                      "batch-dependent" if r["batch_dependent"] else ""] if x)
        table.append([r["id"], r["zone"], r.get("placed", "-"), fmt(r["estimate_mb"], 0), cap_txt,
                      fmt(r.get("measured_mb")), fmt(ratio, 2), fmt(r.get("device_drop_load_mb")),
                      fmt(r.get("device_drop_after_runs_mb")),
                      fmt(r.get("device_not_returned_mb")),
                      perf(r, "device_perf", 1), perf(r, "device_perf", 16),
                      perf(r, "cpu_perf", 1), perf(r, "cpu_perf", 16),
                      fmt(r.get("speedup_b1"), 2), fmt(r.get("speedup_b16"), 2), note or ""])
    dev_word = "sim" if dry else "GPU"
    print(md_table(["model", "zone", "placed", "estimate MiB", "arena cap MiB",
                    "measured MiB (manager)", "measured / estimate",
                    f"{mem_word} drop at load MiB", f"{mem_word} drop after runs MiB",
                    f"{mem_word} not returned MiB", f"{dev_word} b1 /s", f"{dev_word} b16 /s",
                    "CPU b1 /s", "CPU b16 /s", f"{dev_word}/CPU b1", f"{dev_word}/CPU b16",
                    "notes"], table))
    print("\n/s = input rows (images or faces) per second; 'fixed' = the model's batch "
          "dimension is fixed at 1; arena cap = the gpu_mem_limit the CUDA session got "
          "(in brackets: the manager's rule, the model's zone budget and at least its "
          "estimate, where no CUDA session reported one)")
    if dry:
        print("DRY RUN: 'measured' is process RSS growth and the drops are the simulated "
              "device's accounting; no GPU was used.")
    mgr.close()
    cpu_mgr.close()
    del primer

    out = Path(args.json or (RESULTS / ("gpu_check_dry_run_cpu.json" if dry else
                                        "gpu_check.json")))
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"dry_run_cpu": dry, "machine": info, "gpu": gpu_info, "model_dir": str(model_dir),
           "device": dev.name, "budget_mb": mgr.budget_mb, "duration_s": args.duration,
           "det_size": args.det_size, "not_installed": skipped, "models": rows,
           "failed": failed}
    out.write_text(json.dumps(doc, indent=1, default=str))
    print(f"\n- JSON: {out}")
    if failed:
        print(f"- {failed} model(s) did not load or run on {dev.name}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Load every installed ONNX model on CUDA through the ModelManager: "
                    "NVML memory against the catalog estimate, throughput CUDA vs CPU.",
        epilog=HOW_TO, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--gpu", type=int, default=0, help="GPU index (Settings.gpu_index)")
    ap.add_argument("--models", default="", help="comma-separated model ids (default: all)")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per throughput point (default 1.0; 0.2 in a dry run)")
    ap.add_argument("--det-size", type=int, default=640,
                    help="height/width for inputs whose size is free (detectors)")
    ap.add_argument("--cpu-threads", type=int, default=0,
                    help="ONNX Runtime intra-op threads on CPU (0 = its default)")
    ap.add_argument("--load-timeout", type=float, default=60.0)
    ap.add_argument("--json", nargs="?", const=None, default=None, metavar="OUT",
                    help="JSON path (default bench/results/gpu_check.json, or "
                         "gpu_check_dry_run_cpu.json with --dry-run-cpu)")
    ap.add_argument("--dry-run-cpu", action="store_true",
                    help="no GPU: run the same loop with device 'sim' (sessions on CPU)")
    args = ap.parse_args(argv)
    if args.duration is None:
        args.duration = 0.2 if args.dry_run_cpu else 1.0
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(
        ["bench/gpu_check.py", *argv])
    try:
        return run(args, command)
    except NoGpu as exc:
        print(f"gpu_check: cannot run: {exc}\n\n{HOW_TO}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
