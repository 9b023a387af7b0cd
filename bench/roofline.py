"""The physical bound: each model's measured time against its operation count / this CPU's
measured matrix-multiply rate.

1. numpy float32 matmul on square matrices (best of several repeats, 2 n^3 FLOPs) with
   BLAS's own thread count and with 1 thread: the machine's attainable dense rate.
2. The operations of one inference of every installed ONNX model at the input shape the
   product feeds it (onnx shape inference on the concrete shape; the few tensors whose
   shape depends on runtime values, e.g. SCRFD's FPN Resize, from one plain ORT run):
   multiply-accumulates of Conv (grouped and depthwise too), ConvTranspose, Gemm and
   MatMul (FLOPs = 2 MACs), elementwise ops counted apart.
3. Inference time through facesocial.runtime.SessionFactory (the product's session
   options), median of the runs after warm-up, with the product settings and with
   intra_op_threads=1; the embedder at batch 1 and 8.
4. bound = FLOPs / best matmul rate (the 1-thread rate for the 1-thread rows) and
   measured / bound; the embedding stage (default embedder, flip TTA = 2 inferences per
   face, SCRFD landmark refinement on a 320 px crop) against the 3x target.
5. An ONNX Runtime profile of the stage's models: time and achieved rate per kind of op
   (depthwise / 1x1 / kxk convolution, layout reorders, activations) and the time outside
   kernels.

    python bench/roofline.py [--model-home DIR] [--quick] [--rounds 2] [--json PATH]
                             [--section bench/results/roofline_section.md]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import fmt, machine_info, md_table, model_home, print_run_header

DISTS = (("facesocial", "facesocial"), ("onnxruntime", "onnxruntime"), ("numpy", "numpy"),
         ("onnx", "onnx"))
EMBEDDER = "w600k_mbf_folded"  # the default embedder (highest rank among installed)
REFINER = "scrfd_2.5g"  # landmark refinement of the recognition pipeline
TARGET = 3.0  # the embedding stage within 3x of the matmul bound

# The input shapes the product feeds (src/facesocial/vision/*.py). Detectors take any
# size: the image is shrunk to a long side of at most 640 (a 4:3 photo: 640x480) and
# padded to /32; the landmark refinement runs SCRFD on a square crop of twice the face
# (at most 320 px, vision/landmarks.py MAX_SIDE: faces of 160 px and more; smaller faces
# give smaller crops). Everything else: the catalog's shape.
SHAPES: dict[str, list[tuple[str, tuple[int, ...]]]] = {
    "yunet": [("detect 640x480", (1, 3, 480, 640))],
    "scrfd_2.5g": [("detect 640x480", (1, 3, 480, 640)),
                   ("landmark refine 320", (1, 3, 320, 320))],
    "det_500m": [("detect 640x480", (1, 3, 480, 640))],
    "det_10g": [("detect 640x480", (1, 3, 480, 640))],
    EMBEDDER: [("embed b1", (1, 3, 112, 112)), ("embed b8", (8, 3, 112, 112))],
}
REQUIRED = ("yunet", "scrfd_2.5g", "w600k_mbf_folded", "mobilefacenet", "antispoof_binary",
            "antispoof_print_replay", "yolox_nano", "meso4_deepfake")



def meso4_hand_macs() -> int:
    """Meso4 by hand: four 'same' convolutions, then dense 1024 -> 16 -> 1."""
    convs = [(256, 3, 8, 3), (128, 8, 8, 5), (64, 8, 16, 5), (32, 16, 16, 5)]  # side, in, out, k
    return sum(s * s * co * ci * k * k for s, ci, co, k in convs) + 1024 * 16 + 16


# Published or hand-computed operation counts to check the counter against.
# (model id, input shape, expected value, unit, source)
CHECKS: tuple[tuple[str, tuple[int, ...], float, str, str], ...] = (
    ("meso4_deepfake", (1, 3, 256, 256), float(meso4_hand_macs()), "MACs",
     "hand count of Meso4 (Afchar et al. 2018): conv 3->8 3x3 @256, 8->8 5x5 @128, "
     "8->16 5x5 @64, 16->16 5x5 @32 ('same' padding, 2x2/2x2/2x2/4x4 pools), "
     "dense 1024->16->1"),
    ("yolox_nano", (1, 3, 416, 416), 1.08e9, "FLOPs",
     "YOLOX paper/README: YOLOX-Nano 0.91M params, 1.08 GFLOPs at 416 (thop MACs x 2)"),
    ("mobilefacenet", (1, 3, 112, 112), 0.449e9, "FLOPs",
     "OpenVINO Open Model Zoo face-recognition-mobilefacenet-arcface: 0.449 GFLOPs "
     "(MobileFaceNet paper: 221M MAdds); this file is a different 128-d export"),
    ("scrfd_2.5g", (1, 3, 480, 640), 2.5e9, "MACs",
     "InsightFace SCRFD README: SCRFD_2.5G_KPS '2.5G FLOPs' at VGA (mmcv get_flops, "
     "which counts multiply-adds)"),
)

MATMUL_OPS = {"Conv", "ConvInteger", "ConvTranspose", "Gemm", "MatMul", "MatMulInteger"}
ELEMENTWISE_OPS = {
    "Add", "Sub", "Mul", "Div", "Relu", "PRelu", "LeakyRelu", "Sigmoid", "Tanh", "Clip",
    "HardSigmoid", "HardSwish", "Exp", "Log", "Sqrt", "Pow", "Max", "Min", "Neg", "Abs",
    "BatchNormalization", "Softmax", "Erf", "Elu", "Selu", "Softplus", "Mish", "Where",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Equal", "Less", "Greater", "Not",
    "Cast", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"}
POOL_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean",
            "ReduceMax", "ReduceSum"}


# --------------------------------------------------------------------------- machine rate
@dataclass(frozen=True)
class MatmulRate:
    n: int
    threads: int
    best_ms: float
    gflops: float
    when: str  # "before" or "after" the model timings


def matmul_gflops(n: int, seconds: float) -> float:
    return 2.0 * n ** 3 / seconds / 1e9


def _openblas() -> ctypes.CDLL | None:
    """numpy's OpenBLAS (found among the loaded libraries), or None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for path in sorted({ln.split()[-1] for ln in maps.splitlines() if "openblas" in ln.lower()}):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def _blas_fn(suffix: str) -> Callable[..., int] | None:
    lib = _openblas()
    for name in (f"scipy_openblas_{suffix}64_", f"openblas_{suffix}64_", f"openblas_{suffix}"):
        if lib is not None and hasattr(lib, name):
            return getattr(lib, name)  # type: ignore[no-any-return]
    return None


def blas_threads() -> tuple[int, str]:
    """The number of threads numpy's BLAS uses, and how it was found."""
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-not-found]

        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                return int(pool["num_threads"]), f"threadpoolctl ({pool['internal_api']})"
    except ImportError:
        pass
    get = _blas_fn("get_num_threads")
    if get is not None:
        return int(get()), "OpenBLAS get_num_threads (threadpoolctl not installed)"
    env = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
           if k in os.environ}
    return os.cpu_count() or 1, f"assumed os.cpu_count(); env {env or 'unset'}"


@contextmanager
def blas_limited(threads: int) -> Iterator[bool]:
    """Run numpy's BLAS on ``threads`` threads inside the block; yields whether it could."""
    get, set_ = _blas_fn("get_num_threads"), _blas_fn("set_num_threads")
    if get is None or set_ is None:
        yield False
        return
    before = int(get())
    set_(threads)
    try:
        yield True
    finally:
        set_(before)


def measure_matmul(sizes: Iterable[int], repeats: int, threads: int,
                   when: str) -> list[MatmulRate]:
    rng = np.random.default_rng(0)
    out = []
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), np.float32)
        np.matmul(a, b, out=c)  # warm-up: thread pool, pages
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            np.matmul(a, b, out=c)
            best = min(best, time.perf_counter() - t)
        out.append(MatmulRate(n, threads, best * 1e3, matmul_gflops(n, best), when))
    return out


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """GB/s of a large float32 array copy (bytes read + written), a DRAM-bandwidth figure."""
    a = np.ones(mib * 2 ** 20 // 4, np.float32)
    b = np.empty_like(a)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


# --------------------------------------------------------------------------- op counting
@dataclass(frozen=True)
class NodeCount:
    name: str
    op_type: str
    kind: str  # conv_dw, conv_grouped, conv_1x1, conv_kxk, conv_transpose, gemm, elementwise...
    macs: int
    elem_ops: int  # elementwise / pooling operations (not multiply-accumulates)
    out_bytes: int
    weight_bytes: int


def prod(xs: Iterable[int]) -> int:
    return math.prod(int(x) for x in xs)


def conv_kind(x_channels: int, w_shape: tuple[int, ...]) -> str:
    """Depthwise (one input channel per group, every channel its own group), grouped,
    pointwise 1x1 or dense kxk, from the input channels and the weight [Cout, Cin/g, k...]."""
    cin_per_group = w_shape[1]
    if cin_per_group < x_channels:
        return "conv_dw" if cin_per_group == 1 and w_shape[0] >= x_channels else "conv_grouped"
    return "conv_1x1" if prod(w_shape[2:]) == 1 else "conv_kxk"


def conv_macs(y_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> int:
    """Every output element takes Cin/g x prod(kernel) multiply-accumulates."""
    return prod(y_shape) * prod(w_shape[1:])


def conv_transpose_macs(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> int:
    """Every input element scatters into Cout/g x prod(kernel) outputs (W: [Cin, Cout/g, k...])."""
    return prod(x_shape) * prod(w_shape[1:])


def matmul_macs(a_shape: tuple[int, ...], y_shape: tuple[int, ...], trans_a: bool = False) -> int:
    """Every output element takes K multiply-accumulates (K = A's inner dimension)."""
    if len(a_shape) == 1:
        k = a_shape[0]
    else:
        k = a_shape[-2] if trans_a else a_shape[-1]
    return prod(y_shape) * k


def pool_ops(x_shape: tuple[int, ...], y_shape: tuple[int, ...], kernel: Iterable[int],
             global_pool: bool) -> int:
    return prod(x_shape) if global_pool else prod(y_shape) * prod(kernel)


Shapes = dict[str, tuple[tuple[int, ...], int]]  # tensor -> (shape, bytes per element)


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def count_node(node: Any, shapes: Shapes, initializers: set[str]) -> NodeCount:
    """The operations of one ONNX node from its tensors' shapes."""
    def shape(i: int, outputs: bool = False) -> tuple[int, ...]:
        names = node.output if outputs else node.input
        return shapes[names[i]][0] if i < len(names) and names[i] in shapes else ()

    op = node.op_type
    out_bytes = sum(prod(shapes[o][0]) * shapes[o][1] for o in node.output if o in shapes)
    weight_bytes = sum(prod(shapes[i][0]) * shapes[i][1] for i in node.input
                       if i in initializers and i in shapes)
    y = shape(0, outputs=True)
    macs, elem, kind = 0, 0, "other"
    if op in ("Conv", "ConvInteger"):
        x, w = shape(0), shape(1)
        macs, kind = conv_macs(y, w), conv_kind(x[1], w)
    elif op == "ConvTranspose":
        macs, kind = conv_transpose_macs(shape(0), shape(1)), "conv_transpose"
    elif op == "Gemm":
        macs, kind = matmul_macs(shape(0), y, bool(_attr(node, "transA", 0))), "gemm"
    elif op in ("MatMul", "MatMulInteger"):
        macs, kind = matmul_macs(shape(0), y), "gemm"
    elif op in ELEMENTWISE_OPS:
        elem, kind = prod(y), "elementwise"
    elif op in POOL_OPS:
        elem = pool_ops(shape(0), y, _attr(node, "kernel_shape", [1]), op.startswith("Global")
                        or op.startswith("Reduce"))
        kind = "pool"
    elif op in ("Resize", "Upsample"):
        elem, kind = prod(y), "resize"
    else:
        kind = "data"  # Reshape, Transpose, Concat, Slice, Shape...: data movement only
    return NodeCount(node.name, op, kind, macs, elem, out_bytes, weight_bytes)


def concrete(model: Any, input_shape: tuple[int, ...]) -> Any:
    """A copy of ``model`` whose (first) graph input has ``input_shape``."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    graph_in = next(i for i in m.graph.input if i.name not in inits)
    dims = graph_in.type.tensor_type.shape.dim
    for d, v in zip(dims, input_shape, strict=True):
        d.Clear()
        d.dim_value = v
    # shapes stored in the file were inferred for its declared input (often batch 1)
    del m.graph.value_info[:]
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    return m


def _itemsize(elem_type: int) -> int:
    import onnx

    return int(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)


def inferred_shapes(model: Any) -> Shapes:
    """Every tensor with a fully static shape after onnx shape inference (data propagation on)."""
    import onnx

    m = onnx.shape_inference.infer_shapes(model, data_prop=True)
    out: Shapes = {}
    for vi in [*m.graph.value_info, *m.graph.input, *m.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            out[vi.name] = (tuple(d.dim_value for d in t.shape.dim), _itemsize(t.elem_type))
    for init in m.graph.initializer:
        out[init.name] = (tuple(init.dims), _itemsize(init.data_type))
    return out


def runtime_shapes(model: Any, input_shape: tuple[int, ...], names: list[str]) -> Shapes:
    """Shapes of ``names`` from one run on zeros (a plain, unoptimised ORT session used only
    as a shape oracle; not timed)."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.zeros(input_shape, np.float32)}
    outs = sess.run(None, feed)
    return {o.name: (tuple(v.shape), v.itemsize)
            for o, v in zip(sess.get_outputs(), outs, strict=True) if o.name in names}


@dataclass(frozen=True)
class ModelCount:
    macs: int
    elem_ops: int
    weight_bytes: int
    act_bytes: int  # every node output written once
    nodes: int
    runtime_shaped: int  # tensors whose shape came from the ORT run
    uncounted: int  # matmul-like nodes without shapes (0 = complete)
    by_kind: dict[str, int]  # MACs per kind

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def intensity(self) -> float:
        """FLOPs per byte of minimal traffic: weights once, each activation written and read."""
        return self.flops / max(1, self.weight_bytes + 2 * self.act_bytes)


def summarize(counts: list[NodeCount], runtime_shaped: int, uncounted: int) -> ModelCount:
    by_kind: dict[str, int] = {}
    for c in counts:
        if c.macs:
            by_kind[c.kind] = by_kind.get(c.kind, 0) + c.macs
    return ModelCount(sum(c.macs for c in counts), sum(c.elem_ops for c in counts),
                      sum(c.weight_bytes for c in counts), sum(c.out_bytes for c in counts),
                      len(counts), runtime_shaped, uncounted, by_kind)


def count_model(model: Any, input_shape: tuple[int, ...]) -> ModelCount:
    m = concrete(model, input_shape)
    shapes = inferred_shapes(m)
    missing = [o for n in m.graph.node for o in n.output if o and o not in shapes]
    if missing:
        shapes.update(runtime_shapes(m, input_shape, missing))
    inits = {i.name for i in m.graph.initializer}
    counts = [count_node(n, shapes, inits) for n in m.graph.node]
    uncounted = sum(1 for n in m.graph.node if n.op_type in MATMUL_OPS
                    and not all(i in shapes for i in n.input[:2]))
    return summarize(counts, len(missing), uncounted)


# --------------------------------------------------------------------------- timing
def load_onnx(spec: Any, path: Path) -> Any:
    """The graph the product loads: the file, with the catalog's load-time patch applied."""
    import onnx

    patch = spec.extra.get("load_patch")
    if patch:
        from facesocial.models.graph_patches import apply

        return onnx.load_from_string(apply(path, patch))
    return onnx.load(str(path))


def time_runs(fn: Callable[[], object], warmup: int, min_runs: int,
              budget_s: float) -> list[float]:
    """Milliseconds per call: ``warmup`` calls, then at least ``min_runs`` and about
    ``budget_s`` seconds of calls."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 500):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


@dataclass
class Row:
    model: str
    role: str
    shape: tuple[int, ...]
    threads: str  # "product" or "1"
    gflop: float
    median_ms: float
    best_ms: float
    runs: int
    bound_ms: float
    ratio: float
    load1: float
    medians_by_round: list[float]


Key = tuple[str, tuple[int, ...]]
Work = tuple[Any, Path, str, tuple[int, ...]]


def bound_ms(flops: float, gflops: float) -> float:
    return flops / (gflops * 1e9) * 1e3


# --------------------------------------------------------------------------- profiling
@contextmanager
def profiled_sessions(prefix: str) -> Iterator[None]:
    """Sessions created inside the block profile themselves (the product's options otherwise:
    SessionFactory builds them, only SessionOptions gains enable_profiling)."""
    import onnxruntime as ort

    original = ort.SessionOptions

    class _Profiling(original):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.enable_profiling = True
            self.profile_file_prefix = prefix

    ort.SessionOptions = _Profiling  # type: ignore[misc]
    try:
        yield
    finally:
        ort.SessionOptions = original  # type: ignore[misc]


def _arg_shapes(args: dict[str, Any], key: str) -> list[tuple[int, ...]]:
    return [tuple(next(iter(d.values()))) for d in args.get(key, [])]


def event_kind(op: str, ins: list[tuple[int, ...]], outs: list[tuple[int, ...]]) -> tuple[str, int]:
    """(kind, MACs) of one profiled kernel from its input and output shapes."""
    y = outs[0] if outs else ()
    if op in ("Conv", "FusedConv", "ConvInteger") and len(ins) >= 2 and len(ins[1]) >= 3:
        return conv_kind(ins[0][1], ins[1]), conv_macs(y, ins[1])
    if op in ("Gemm", "MatMul", "FusedMatMul", "FusedGemm", "MatMulInteger") and ins:
        return "gemm", matmul_macs(ins[0], y)
    if op in ("ReorderInput", "ReorderOutput"):
        return "layout reorder (NCHWc)", 0
    return op, 0


def profile_breakdown(profile: Path, runs: int) -> tuple[dict[str, dict[str, float]], float]:
    """Per kind of op: kernel µs per run and MACs per run, over the last ``runs`` model runs;
    also the mean wall µs of those runs."""
    events = json.loads(profile.read_text())
    model_runs = sorted((e for e in events if e.get("name") == "model_run"),
                        key=lambda e: e["ts"])[-runs:]
    if not model_runs:
        return {}, 0.0
    t0 = model_runs[0]["ts"]
    kinds: dict[str, dict[str, float]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < t0:
            continue
        args = e["args"]
        kind, macs = event_kind(args.get("op_name", "?"), _arg_shapes(args, "input_type_shape"),
                                _arg_shapes(args, "output_type_shape"))
        k = kinds.setdefault(kind, {"us": 0.0, "macs": 0.0, "kernels": 0.0})
        k["us"] += e["dur"] / len(model_runs)
        k["macs"] += macs / len(model_runs)
        k["kernels"] += 1 / len(model_runs)
    wall = statistics.mean(e["dur"] for e in model_runs)
    return kinds, wall


# --------------------------------------------------------------------------- report
def stage_rows(rows: list[Row], threads: str, idle_rate: float) -> list[dict[str, Any]]:
    """The embedding stage per face: the embedder (b1, b8 per face), and the recognition
    pipeline's total (refinement + 2 embedder inferences for flip TTA). ``idle_rate``: the
    rate the threads would have on an idle machine (cores x the 1-thread rate), a second,
    load-independent bound."""
    get = {(r.model, r.shape, r.threads): r for r in rows}
    b1 = get.get((EMBEDDER, (1, 3, 112, 112), threads))
    b8 = get.get((EMBEDDER, (8, 3, 112, 112), threads))
    ref = get.get((REFINER, (1, 3, 320, 320), threads))
    out: list[dict[str, Any]] = []

    def add(name: str, parts: list[tuple[Row, float]]) -> None:
        med = sum(r.median_ms * k for r, k in parts)
        best = sum(r.best_ms * k for r, k in parts)
        bound = sum(r.bound_ms * k for r, k in parts)
        gflop = sum(r.gflop * k for r, k in parts)
        idle = bound_ms(gflop * 1e9, idle_rate)
        out.append({"stage": name, "threads": threads, "gflop": gflop, "median_ms": med,
                    "best_ms": best, "bound_ms": bound, "ratio": med / bound,
                    "ratio_best": best / bound, "within_target": med / bound <= TARGET,
                    "idle_bound_ms": idle, "ratio_idle": med / idle})

    if b1:
        add(f"{EMBEDDER} b1, 1 face", [(b1, 1.0)])
    if b8:
        add(f"{EMBEDDER} b8, per face", [(b8, 1 / 8)])
    if b1 and ref:
        add("stage b1: refine + 2 x embed (flip)", [(ref, 1.0), (b1, 2.0)])
    if b8 and ref:
        add("stage b8: refine + 2 x embed b8, per face", [(ref, 1.0), (b8, 2 / 8)])
    return out


def headline(stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The target's figure: the default embedder at batch 1 with the product's settings."""
    s = next((s for s in stages if s["threads"] == "product"
              and s["stage"].startswith(f"{EMBEDDER} b1")), None)
    return None if s is None else {**s, "what": f"{EMBEDDER} b1 per face, product ORT "
                                   "settings, median / bound"}


def shape_str(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def plan(catalog: Any, home: Path) -> tuple[list[Work], list[str]]:
    """(spec, path, role, input shape) of every installed ONNX model at the product's
    shapes, and the ids skipped (not installed, or no known input size)."""
    work: list[Work] = []
    skipped: list[str] = []
    for spec in catalog:
        if not spec.file or not spec.file.endswith(".onnx"):
            continue
        path = home / spec.file
        if not path.exists():
            skipped.append(spec.id)
            continue
        shape_list = SHAPES.get(spec.id)
        if shape_list is None:
            dims = spec.input.get("shape", [])
            if len(dims) != 4 or not all(isinstance(d, int) for d in dims[1:]):
                skipped.append(f"{spec.id} (no product input size known)")
                continue
            shape = (1, *(int(d) for d in dims[1:]))
            shape_list = [(f"{shape[2]}x{shape[3]}", shape)]
        work += [(spec, path, role, shape) for role, shape in shape_list]
    return work, skipped


def cross_checks(graphs: dict[str, Any], counts: dict[Key, ModelCount]) -> list[dict[str, Any]]:
    out = []
    for model_id, shape, expected, unit, source in CHECKS:
        if model_id not in graphs:
            continue
        c = counts.get((model_id, shape)) or count_model(graphs[model_id], shape)
        got = float(c.macs if unit == "MACs" else c.flops)
        out.append({"model": model_id, "shape": shape, "unit": unit, "counted": got,
                    "expected": expected, "ratio": got / expected, "source": source})
    return out


Timings = dict[tuple[str, tuple[int, ...], str], dict[str, list[float]]]


def run_timings(work: list[Work], factories: dict[str, Any], rounds: int, warmup: int,
                min_runs: int, budget: float) -> Timings:
    """Per (model, shape, threads): every round's median, all samples and the 1-min load."""
    sessions: dict[tuple[str, str], Any] = {}
    out: Timings = {}
    for rnd in range(rounds):
        for threads, factory in factories.items():
            for spec, path, _role, shape in work:
                if (spec.id, threads) not in sessions:
                    sessions[(spec.id, threads)] = factory.create(spec, path)
                lm = sessions[(spec.id, threads)]
                x = np.random.default_rng(1).uniform(0, 1, shape).astype(np.float32)
                times = time_runs(lambda lm=lm, x=x: lm.run(x), warmup, min_runs, budget)
                t = out.setdefault((spec.id, shape, threads),
                                   {"medians": [], "samples": [], "load": []})
                t["medians"].append(statistics.median(times))
                t["samples"] += times
                t["load"].append(os.getloadavg()[0])
            print(f"  round {rnd + 1}, ORT threads {threads}: done "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    return out


def build_rows(work: list[Work], counts: dict[Key, ModelCount], timings: Timings,
               rates: dict[str, float]) -> list[Row]:
    """Rows with the bound; the median is the quietest round's."""
    rows = []
    for spec, _path, role, shape in work:
        c = counts[(spec.id, shape)]
        for threads, rate in rates.items():
            t = timings[(spec.id, shape, threads)]
            med = min(t["medians"])
            bnd = bound_ms(c.flops, rate)
            rows.append(Row(spec.id, role, shape, threads, c.flops / 1e9, med,
                            min(t["samples"]), len(t["samples"]), bnd, med / bnd,
                            max(t["load"]), t["medians"]))
    return rows


PROFILED = ((EMBEDDER, (1, 3, 112, 112), "product"), (EMBEDDER, (8, 3, 112, 112), "product"),
            (REFINER, (1, 3, 320, 320), "product"), (EMBEDDER, (1, 3, 112, 112), "1"))


def run_profiles(factories: dict[str, Any], catalog: Any, home: Path, graphs: dict[str, Any],
                 warmup: int, runs: int) -> dict[str, dict[str, Any]]:
    """ONNX Runtime profiles of the embedding stage's models."""
    pdir = tempfile.mkdtemp(prefix="fs-roofline-prof-")
    out: dict[str, dict[str, Any]] = {}
    for model_id, shape, threads in PROFILED:
        if model_id not in graphs:
            continue
        spec = catalog.get(model_id)
        with profiled_sessions(os.path.join(pdir, f"{model_id}-{shape[0]}-{threads}")):
            lm = factories[threads].create(spec, home / spec.file)
        x = np.random.default_rng(1).uniform(0, 1, shape).astype(np.float32)
        for _ in range(warmup + runs):
            lm.run(x)
        kinds, wall = profile_breakdown(Path(lm.session.end_profiling()), runs)
        out[f"{model_id} {shape_str(shape)}, ORT threads {threads}"] = {
            "model": model_id, "shape": shape, "threads": threads, "kinds": kinds,
            "wall_us": wall}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-home", default=None, help="default: pull one from ../shared/models")
    ap.add_argument("--quick", action="store_true", help="fewer sizes, repeats and runs")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds (default 2, quick 1)")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--section", default=None, help="write the markdown section here")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    info = machine_info(command, DISTS)
    rounds = args.rounds or (1 if args.quick else 2)
    sizes = (256, 512, 1024, 2048) if not args.quick else (256, 1024, 2048)
    repeats = 3 if args.quick else 7
    warmup, min_runs, budget = (3, 8, 0.4) if args.quick else (5, 15, 1.2)

    from facesocial.models.catalog import Catalog
    from facesocial.runtime import SessionFactory
    from facesocial.settings import Settings

    home = model_home(args.model_home)
    catalog = Catalog.load()
    n_threads, how = blas_threads()

    def machine_rates(when: str) -> list[MatmulRate]:
        rates = measure_matmul(sizes, repeats, n_threads, when)
        with blas_limited(1) as limited:
            if limited and n_threads > 1:
                rates += measure_matmul(sizes, repeats, 1, when)
        return rates

    # 1. the machine's rate, before the timings (and again after them, below)
    rates = machine_rates("before")
    bandwidth = copy_bandwidth()

    # 2. operation counts at the product's shapes
    work, skipped = plan(catalog, home)
    graphs = {spec.id: load_onnx(spec, path) for spec, path, _, _ in work}
    counts = {(spec.id, shape): count_model(graphs[spec.id], shape) for spec, _, _, shape in work}
    missing_required = [m for m in REQUIRED if m not in graphs]
    checks = cross_checks(graphs, counts)
    print(f"counted {len(counts)} model/shape pairs; not installed: {', '.join(skipped) or '-'}",
          flush=True)

    # 3. timings through the product's SessionFactory: product settings and 1 intra-op thread
    factories = {"product": SessionFactory(Settings(model_dir=home)),
                 "1": SessionFactory(Settings(model_dir=home, intra_op_threads=1))}
    timings = run_timings(work, factories, rounds, warmup, min_runs, budget)
    rates += machine_rates("after")
    # the bound: the best rate measured with any thread count (on a loaded machine the
    # 1-thread rate can beat the all-thread one); the 1-thread rows use the 1-thread rate
    peak = max(r.gflops for r in rates)
    peak1 = max((r.gflops for r in rates if r.threads == 1), default=peak)
    rows = build_rows(work, counts, timings, {"product": peak, "1": peak1})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    stages = (stage_rows(rows, "product", max(peak, cores * peak1))
              + stage_rows(rows, "1", peak1))

    # 4. where the time goes: ORT profiles of the stage's models
    profiles = {} if args.no_profile else run_profiles(
        factories, catalog, home, graphs, warmup, 10 if args.quick else 30)

    # 5. report
    print()
    print_run_header(info, command)
    print(f"- load average after the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"- numpy BLAS threads: {n_threads} ({how}); model home {home}")
    print(f"- not installed (skipped): {', '.join(skipped) or 'none'}"
          + (f"; required but missing: {', '.join(missing_required)}" if missing_required else ""))
    tables = render(rates, peak, peak1, bandwidth, rows, counts, checks, stages, profiles, work)
    print()
    print(tables)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": info, "blas_threads": n_threads, "blas_threads_how": how,
            "matmul": [asdict(r) for r in rates], "peak_gflops": peak,
            "peak_gflops_1thread": peak1, "copy_bandwidth_gbs": bandwidth,
            "counts": [{"model": m, "shape": s, **asdict(c), "flops": c.flops,
                        "intensity": c.intensity} for (m, s), c in counts.items()],
            "checks": checks, "stage": stages, "embedding_stage": headline(stages),
            "rows": [{**asdict(r), "measured_ms": r.median_ms,
                      "label": f"{r.model} {r.role} (ORT threads {r.threads})"} for r in rows],
            "profiles": profiles, "skipped": skipped, "load_after": list(os.getloadavg())},
            indent=1, default=str))
    if args.section:
        Path(args.section).parent.mkdir(parents=True, exist_ok=True)
        Path(args.section).write_text(section(info, command, tables, rows, stages, profiles,
                                              counts, peak, peak1, bandwidth, skipped))
        print(f"\nwrote {args.section}")


def render(rates: list[MatmulRate], peak: float, peak1: float, bandwidth: float,
           rows: list[Row], counts: dict[Key, ModelCount], checks: list[dict[str, Any]],
           stages: list[dict[str, Any]], profiles: dict[str, dict[str, Any]],
           work: list[Work]) -> str:
    parts = ["#### Machine: numpy float32 matmul (2 n^3 FLOPs, best of the repeats)", "",
             md_table(["n", "BLAS threads", "measured", "best ms", "GFLOP/s"],
                      [[r.n, r.threads, f"{r.when} the model timings", fmt(r.best_ms, 2),
                        fmt(r.gflops, 1)] for r in rates]),
             "", f"Bound rate: **{peak:.1f} GFLOP/s** (best of all sizes, thread counts and both "
             f"passes; the product rows), **{peak1:.1f}** (1 thread; the 1-thread rows). "
             f"Large-array copy: {bandwidth:.1f} GB/s (read + write); ridge point "
             f"{peak / bandwidth:.1f} FLOP/byte.", "",
             "#### Operations of one inference at the product's input shape", "",
             md_table(["model", "role", "input", "GMACs", "GFLOPs", "elementwise Mops",
                       "depthwise MACs %", "weights MB", "activations MB", "FLOP/byte",
                       "nodes"],
                      [[spec.id, role, shape_str(shape), fmt(c.macs / 1e9, 3),
                        fmt(c.flops / 1e9, 3), fmt(c.elem_ops / 1e6, 1),
                        fmt(100 * c.by_kind.get("conv_dw", 0) / max(1, c.macs), 1),
                        fmt(c.weight_bytes / 1e6, 2), fmt(c.act_bytes / 1e6, 1),
                        fmt(c.intensity, 1), c.nodes]
                       for spec, _, role, shape in work
                       for c in [counts[(spec.id, shape)]]]),
             "", "Shapes: onnx shape inference; "
             + ", ".join(f"{m} {shape_str(s)}: {c.runtime_shaped} tensors from one ORT run"
                         for (m, s), c in counts.items() if c.runtime_shaped)
             + "; matmul-like nodes without a shape: "
             + str(sum(c.uncounted for c in counts.values())) + ".",
             "", "#### Cross-check of the counter", "",
             md_table(["model", "input", "unit", "counted", "reference", "counted/reference",
                       "reference source"],
                      [[c["model"], shape_str(c["shape"]), c["unit"], f"{c['counted'] / 1e9:.4f} G",
                        f"{c['expected'] / 1e9:.4f} G", fmt(c["ratio"], 3), c["source"]]
                       for c in checks]),
             "", "#### Measured time against the bound (batch = input's first dimension)", "",
             md_table(["model", "role", "input", "ORT threads", "GFLOPs", "median ms",
                       "best ms", "runs", "bound ms", "median / bound", "achieved GFLOP/s",
                       "load avg"],
                      [[r.model, r.role, shape_str(r.shape), r.threads, fmt(r.gflop, 3),
                        fmt(r.median_ms, 2), fmt(r.best_ms, 2), r.runs, fmt(r.bound_ms, 3),
                        fmt(r.ratio, 1), fmt(r.gflop / r.median_ms * 1e3, 1), fmt(r.load1, 2)]
                       for r in rows]),
             "", f"#### The embedding stage (target: within {TARGET:g}x of the bound), per face",
             "",
             md_table(["stage", "ORT threads", "GFLOPs", "median ms", "best ms", "bound ms",
                       "median / bound", "best / bound", f"within {TARGET:g}x",
                       "missed by (median)", "median / idle-machine bound"],
                      [[s["stage"], s["threads"], fmt(s["gflop"], 3), fmt(s["median_ms"], 2),
                        fmt(s["best_ms"], 2), fmt(s["bound_ms"], 3), fmt(s["ratio"], 1),
                        fmt(s["ratio_best"], 1), "yes" if s["within_target"] else "no",
                        "-" if s["within_target"] else f"{s['ratio'] / TARGET:.2f}x",
                        fmt(s["ratio_idle"], 1)]
                       for s in stages]),
             "", "Idle-machine bound: FLOPs / (usable cores x the best 1-thread rate) for the "
             "product rows (when that beats the measured all-thread rate: on a loaded machine "
             "the all-core rate cannot be measured), the 1-thread rate for the 1-thread rows."]
    for name, p in profiles.items():
        kinds, wall = p["kinds"], p["wall_us"]
        total = sum(k["us"] for k in kinds.values())
        body = [[kind, fmt(k["kernels"], 0), fmt(k["macs"] / 1e6, 1), fmt(k["us"] / 1e3, 3),
                 fmt(100 * k["us"] / wall, 1),
                 fmt(2 * k["macs"] / k["us"] / 1e3, 1) if k["macs"] else "-"]
                for kind, k in sorted(kinds.items(), key=lambda kv: -kv[1]["us"])]
        body.append(["outside kernels (scheduling, allocation, session)", "-", "-",
                     fmt((wall - total) / 1e3, 3), fmt(100 * (wall - total) / wall, 1), "-"])
        graph_macs = counts[(p["model"], p["shape"])]
        kernel_macs = sum(k["macs"] for k in kinds.values())
        parts += ["", f"#### ONNX Runtime profile: {name} "
                  f"(mean wall {wall / 1e3:.2f} ms per run while profiling)", "",
                  md_table(["kind of kernel", "kernels per run", "MMACs as run",
                            "ms per run", "% of wall", "achieved GFLOP/s"], body), "",
                  f"MACs as run / graph MACs = {kernel_macs / max(1, graph_macs.macs):.3f} "
                  "(from the kernels' own shapes; ORT's NCHWc layout pads channel counts to "
                  "its block size)."]
    return "\n".join(parts)


def profile_facts(name: str, kinds: dict[str, dict[str, float]], wall: float,
                  bound_us: float) -> str:
    """One line of figures from a profile: MAC kernels' share and rate, the costliest
    kernels without MACs, the time outside kernels, and what the MAC kernels alone would
    make of the ratio to the bound."""
    macs = sum(k["macs"] for k in kinds.values())
    mac_us = sum(k["us"] for k in kinds.values() if k["macs"])
    facts = [f"{kind} {100 * k['macs'] / max(1, macs):.0f}% of MACs in "
             f"{100 * k['us'] / wall:.0f}% of the time at {2 * k['macs'] / k['us'] / 1e3:.1f} "
             f"GFLOP/s" for kind, k in sorted(kinds.items(), key=lambda kv: -kv[1]["us"])
             if k["macs"] and k["us"]]
    no_mac = sorted(((kind, k) for kind, k in kinds.items() if not k["macs"]),
                    key=lambda kv: -kv[1]["us"])
    facts.append("no-MAC kernels " + f"{100 * sum(k['us'] for _, k in no_mac) / wall:.0f}% ("
                 + ", ".join(f"{kind} x{k['kernels']:.0f} {100 * k['us'] / wall:.0f}%"
                             for kind, k in no_mac[:3]) + ")")
    outside = wall - sum(k["us"] for k in kinds.values())
    facts.append(f"outside kernels {100 * outside / wall:.0f}%")
    facts.append(f"while profiling: {wall / bound_us:.1f}x the bound, the MAC kernels alone "
                 f"{mac_us / bound_us:.1f}x")
    return f"- Profile {name} ({wall / 1e3:.1f} ms per run): " + "; ".join(facts) + "."


WHY = """Why the small models stay far from a matmul bound, in general:

- Arithmetic intensity. A depthwise 3x3 convolution does 9 multiply-accumulates per output
  element and a grouped one a few tens, against 128-512 for the 1x1 convolutions of the
  same network; activations, reorders, pooling and Resize do none. Those kernels are limited
  by moving data (caches, then memory bandwidth), not by the FMA units that numpy's matmul
  saturates, so their 'achieved GFLOP/s' is a small fraction of the matmul rate.
- Small GEMMs. A 1x1 convolution is a GEMM of M = output channels, K = input channels and
  N = pixels; with K of 64-256 and, late in the network, N of 49-196, each weight is reused
  little and the packing and edge overheads of a GEMM weigh more than in numpy's large
  square matrices.
- Layout. ONNX Runtime's CPU convolutions run in a blocked NCHWc layout; an operator
  without an NCHWc kernel between two convolutions makes ORT convert the tensor out and
  back in (ReorderOutput / ReorderInput): pure copies at the full activation size. In
  w600k_mbf the profile shows such a pair around nearly every one of its 34 PRelu
  activations (ORT 1.30 fuses Relu into its NCHWc convolutions, not PRelu), and PRelu
  itself runs as a broadcasting elementwise kernel.
- Per-operator overhead and threads. Every kernel is dispatched separately, and with 2
  intra-op threads each one is split and joined again; on small tensors this costs about as
  much as it saves, and on a shared 2-core machine the second thread is often busy with
  another process. The bound assumes every FLOP runs at the best matmul rate of all cores.
"""


def why_missed(rows: list[Row], profiles: dict[str, dict[str, Any]],
               rates: dict[str, float]) -> list[str]:
    """Where the embedder's time goes against the bound, from its rows and profiles, for
    each thread setting whose embedder row misses the target."""
    out = []
    by_key = {(r.model, r.shape, r.threads): r for r in rows}
    one = by_key.get((EMBEDDER, (1, 3, 112, 112), "1"))
    for threads, rate in rates.items():
        row = by_key.get((EMBEDDER, (1, 3, 112, 112), threads))
        prof = next((p for p in profiles.values() if p["model"] == EMBEDDER
                     and p["shape"] == (1, 3, 112, 112) and p["threads"] == threads), None)
        if row is None or row.ratio <= TARGET or prof is None or not prof["wall_us"]:
            continue
        kinds, wall = prof["kinds"], prof["wall_us"]
        mac_us = sum(k["us"] for k in kinds.values() if k["macs"])
        bound_us = row.bound_ms * 1e3
        pw = kinds.get("PRelu", {}).get("us", 0.0)
        ro = kinds.get("layout reorder (NCHWc)", {}).get("us", 0.0)
        c11 = kinds.get("conv_1x1")
        text = (f"- Why {EMBEDDER} b1 misses with ORT threads {threads} ({row.ratio:.1f}x, "
                f"{row.ratio / TARGET:.2f}x over the target): in its profile "
                f"{100 * (wall - mac_us) / wall:.0f}% of the time is outside the MAC kernels "
                f"(PRelu {100 * pw / wall:.0f}%, NCHWc reorders {100 * ro / wall:.0f}%); the MAC "
                f"kernels alone would be {mac_us / bound_us:.1f}x the bound")
        if c11 and c11["us"]:
            text += (f", and the 1x1 convolutions that hold most of the MACs run at "
                     f"{2 * c11['macs'] / c11['us'] / 1e3:.0f} GFLOP/s, "
                     f"{100 * 2 * c11['macs'] / c11['us'] / 1e3 / rate:.0f}% of the matmul rate")
        if threads != "1" and one is not None:
            text += (f". The bound credits all cores ({rate:.0f} GFLOP/s against "
                     f"{rates.get('1', math.nan):.0f} for one), but the second intra-op thread "
                     f"gave {one.median_ms / row.median_ms:.2f}x at a load average of "
                     f"{row.load1:.1f} on {os.cpu_count()} cores")
        out.append(text + ".")
    return out


def section(info: dict[str, Any], command: str, tables: str, rows: list[Row],
            stages: list[dict[str, Any]], profiles: dict[str, dict[str, Any]],
            counts: dict[Key, ModelCount], peak: float, peak1: float, bandwidth: float,
            skipped: list[str]) -> str:
    """The markdown section: what was measured, the tables, and a reading from the numbers."""
    prod_rows = sorted((r for r in rows if r.threads == "product"), key=lambda r: -r.ratio)
    cores = info["cores_usable"] or 1
    loads = [r.load1 for r in rows]
    reading = []
    if loads and max(loads) > 0.75 * cores:
        reading.append(
            f"- Load: the 1-minute load average was {min(loads):.1f}-{max(loads):.1f} on "
            f"{cores} cores during the timings, so other processes held the CPU: medians "
            "include waiting for it, the all-thread matmul rate may be under the machine's, and "
            "the 'best' columns are nearer an idle machine. Rerun on a quiet machine before "
            "reading the ratios as the machine's own.")
    reading += ["- Farthest from the bound (product settings, median / bound): "
               + ", ".join(f"{r.model} {r.role} {r.ratio:.1f}x" for r in prod_rows[:4])
               + ". Nearest: "
               + ", ".join(f"{r.model} {r.role} {r.ratio:.1f}x" for r in prod_rows[-3:]) + "."]
    for s in stages:
        verdict = (f"within the {TARGET:g}x target" if s["within_target"] else
                   f"misses the {TARGET:g}x target by {s['ratio'] / TARGET:.2f}x")
        reading.append(f"- {s['stage']} (ORT threads {s['threads']}): {s['median_ms']:.2f} ms "
                       f"median ({s['best_ms']:.2f} best) against a bound of "
                       f"{s['bound_ms']:.2f} ms = {s['ratio']:.1f}x: {verdict} (idle-machine "
                       f"bound {s['idle_bound_ms']:.2f} ms: {s['ratio_idle']:.1f}x).")
    rates = {"product": peak, "1": peak1}
    reading += why_missed(rows, profiles, rates)
    by_key = {(r.model, r.shape, r.threads): r for r in rows}
    for model_id, shape in ((EMBEDDER, (1, 3, 112, 112)), (EMBEDDER, (8, 3, 112, 112))):
        p, one = by_key.get((model_id, shape, "product")), by_key.get((model_id, shape, "1"))
        if p and one:
            reading.append(f"- {model_id} {shape_str(shape)}: product threads "
                           f"{p.median_ms:.2f} ms, 1 intra-op thread {one.median_ms:.2f} ms "
                           f"(speed-up {one.median_ms / p.median_ms:.2f}x from the second "
                           f"thread).")
    reading += [profile_facts(name, p["kinds"], p["wall_us"], 1e3 * bound_ms(
                    counts[(p["model"], p["shape"])].flops, rates[p["threads"]]))
                for name, p in profiles.items() if p["kinds"] and p["wall_us"]]
    emb = counts.get((EMBEDDER, (1, 3, 112, 112)))
    if emb:
        reading.append(
            f"- {EMBEDDER}: {emb.flops / 1e9:.2f} GFLOPs in {emb.nodes} graph nodes, "
            f"{100 * emb.by_kind.get('conv_1x1', 0) / emb.macs:.0f}% of the MACs in 1x1 "
            f"convolutions; {emb.intensity:.0f} FLOP per byte of minimal traffic (weights "
            f"{emb.weight_bytes / 1e6:.1f} MB once, activations {emb.act_bytes / 1e6:.1f} MB "
            f"written and read once) against a ridge point of {peak / bandwidth:.0f} FLOP/byte "
            f"(best matmul rate / large-copy bandwidth).")
    return "\n".join([
        "## The physical bound: each model against this CPU's matrix-multiply rate", "",
        "What was measured: numpy's float32 matmul rate (the machine's attainable dense "
        "rate), each model's operation count at the input shape the product feeds it "
        "(multiply-accumulates of Conv/Gemm/MatMul from onnx shape inference, FLOPs = 2 "
        "MACs), and its inference time through facesocial's SessionFactory (product session "
        "options; also 1 intra-op thread), the median of the quieter round. bound = FLOPs / "
        "best matmul rate; measured / bound says how far each model is from the machine's "
        "limit. Pre-processing, alignment and decoding are not included.", "",
        f"- machine: {info['cpu']}, {info['cores_usable']} usable cores; load average at "
        f"start {', '.join(f'{x:.2f}' for x in info['loadavg_start'])}, after "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine)",
        f"- date: {info['date_utc']}; versions: "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + f", Python {info['python']}",
        f"- command: `{command}`",
        f"- not installed, skipped: {', '.join(skipped) or 'none'}", "",
        tables, "", "### Reading (figures from the run above)", "", *reading, "", WHY])


if __name__ == "__main__":
    main()
