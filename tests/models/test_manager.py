"""ModelManager on a simulated device: zones, eviction, fallback, concurrency, reload, batching.

Real ONNX models from the shared mirror; the simulated GPU accounts real model
sizes (catalog bytes) against a small budget while sessions run on CPU.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from facesocial.models.catalog import Catalog
from facesocial.models.manager import ModelCapacityError, ModelManager, estimate_mb
from facesocial.models.store import ModelStore
from facesocial.settings import Settings

FLEX = ("meso4_deepfake", "scrfd_2.5g", "yolov8_face_lite_t", "yolox_nano", "meso4_face2face")


def _manager(home: Path, catalog: Catalog | None = None, **kw: object) -> ModelManager:
    settings = Settings(model_dir=home, device="sim", intra_op_threads=1, **kw)
    catalog = catalog or Catalog.load()
    return ModelManager(settings, catalog, ModelStore(settings, catalog))


def _est(catalog: Catalog, *ids: str) -> float:
    return sum(estimate_mb(catalog.get(i)) for i in ids)


def _where(mgr: ModelManager) -> dict[str, str | None]:
    return {s["id"]: s["device"] for s in mgr.status()}


def _touch(mgr: ModelManager, *ids: str) -> None:
    for i in ids:
        with mgr.use(i):
            time.sleep(0.002)


def test_lru_eviction_priority_pinning_and_fallback(model_home: Path, catalog: Catalog) -> None:
    room = _est(catalog, "meso4_deepfake", "scrfd_2.5g", "yolov8_face_lite_t") + 10
    # zones of `room` MB each: the flexible zone holds the first three models, not four
    mgr = _manager(model_home, sim_gpu_budget_mb=3 * room, zone_split_mb=(1, 1, 1))
    try:
        _touch(mgr, "meso4_deepfake", "scrfd_2.5g", "yolov8_face_lite_t", "meso4_deepfake")
        assert set(_where(mgr).values()) == {"sim:0"}
        # yolox (priority 50) needs room: the least recently used idle model goes (scrfd)
        _touch(mgr, "yolox_nano")
        where = _where(mgr)
        assert where["scrfd_2.5g"] is None and where["yolox_nano"] == "sim:0"
        assert where["meso4_deepfake"] == where["yolov8_face_lite_t"] == "sim:0"
        # face2face (priority 30) may not evict higher-priority models: it runs on CPU
        _touch(mgr, "meso4_face2face")
        st = {s["id"]: s for s in mgr.status()}
        assert st["meso4_face2face"]["device"] == "cpu" and st["meso4_face2face"]["fallbacks"] == 1
        # a pinned model stays even when it is the oldest eligible victim
        mgr.pin("yolov8_face_lite_t")
        _touch(mgr, "scrfd_2.5g")
        where = _where(mgr)
        assert where["yolov8_face_lite_t"] == "sim:0" and where["scrfd_2.5g"] == "sim:0"
        assert where["meso4_deepfake"] is None
        zones = mgr.vram()["zones"]
        assert zones["flexible"]["used_mb"] <= zones["flexible"]["budget_mb"]
    finally:
        mgr.close()


def test_model_in_use_is_never_evicted(model_home: Path, catalog: Catalog) -> None:
    room = _est(catalog, "meso4_deepfake") + 2
    mgr = _manager(model_home, sim_gpu_budget_mb=3 * room, zone_split_mb=(1, 1, 1))
    try:
        with mgr.use("meso4_deepfake") as held:
            _touch(mgr, "scrfd_2.5g")  # would need meso4's room: it is in use, so CPU
            assert _where(mgr) == {"meso4_deepfake": "sim:0", "scrfd_2.5g": "cpu"}
            held.run(np.zeros((1, 3, 256, 256), np.float32))
        _touch(mgr, "yolox_nano")  # meso4 is idle now: it may go
        assert _where(mgr)["meso4_deepfake"] is None
    finally:
        mgr.close()


def test_critical_models_stay(model_home: Path, catalog: Catalog) -> None:
    room = _est(catalog, "yunet") + 2
    mgr = _manager(model_home, sim_gpu_budget_mb=3 * room, zone_split_mb=(1, 1, 1))
    try:
        _touch(mgr, "yunet", "antispoof_binary")  # both critical; only yunet fits
        assert _where(mgr) == {"yunet": "sim:0", "antispoof_binary": "cpu"}
        mgr.optimize()
        assert _where(mgr)["yunet"] == "sim:0"
    finally:
        mgr.close()


def test_budget_too_small_cpu_or_clear_error(model_home: Path, tmp_path: Path) -> None:
    from importlib import resources

    data = json.loads(resources.files("facesocial.models").joinpath("catalog.json").read_text())
    for m in data["models"]:
        if m["id"] == "mobilefacenet":
            m["serving"]["fallback"] = "none"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    strict = Catalog.load(path)
    mgr = _manager(model_home, strict, sim_gpu_budget_mb=30, load_timeout_s=0.5)
    try:
        _touch(mgr, "w600k_mbf_folded")  # fallback cpu
        assert _where(mgr)["w600k_mbf_folded"] == "cpu"
        t0 = time.monotonic()
        with pytest.raises(ModelCapacityError) as info:
            mgr.acquire("mobilefacenet")
        assert info.value.code == "model_capacity" and "high zone" in info.value.message
        assert time.monotonic() - t0 < 10  # bounded wait, then a clear error
    finally:
        mgr.close()


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "yunet": rng.uniform(0, 255, (1, 3, 160, 160)).astype(np.float32),
        "antispoof_binary": rng.uniform(0, 1, (1, 3, 128, 128)).astype(np.float32),
        "antispoof_print_replay": rng.uniform(0, 1, (1, 3, 128, 128)).astype(np.float32),
        "w600k_mbf_folded": rng.uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32),
        "mobilefacenet": rng.uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32),
        "meso4_deepfake": rng.uniform(0, 1, (2, 3, 256, 256)).astype(np.float32),
        "scrfd_2.5g": rng.uniform(-1, 1, (1, 3, 160, 160)).astype(np.float32),
        "yolox_nano": rng.uniform(0, 255, (1, 3, 416, 416)).astype(np.float32),
    }


def test_32_threads_mixed_requests(model_home: Path, catalog: Catalog) -> None:
    budget = 3 * (_est(catalog, "w600k_mbf_folded", "mobilefacenet") - 10)
    mgr = _manager(model_home, sim_gpu_budget_mb=budget, zone_split_mb=(1, 1, 1),
                   batch_wait_ms=1.0)
    try:
        inputs = _inputs()
        expected = {}
        for mid, x in inputs.items():
            with mgr.use(mid) as m:
                expected[mid] = m.run(x)[0]
        before = mgr.vram()
        errors: list[BaseException] = []
        counts = {mid: 0 for mid in inputs}
        lock = threading.Lock()
        stop = time.monotonic() + 3.0
        order = list(inputs)

        def worker(k: int) -> None:
            i = k
            try:
                while time.monotonic() < stop:
                    mid = order[i % len(order)]
                    i += 3
                    out = mgr.handle(mid).run(inputs[mid])[0]
                    np.testing.assert_allclose(out, expected[mid], rtol=1e-4, atol=1e-4)
                    with lock:
                        counts[mid] += 1
            except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
                errors.append(exc)

        def operator() -> None:  # re-packs while requests run
            while time.monotonic() < stop:
                try:
                    mgr.optimize()
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
                time.sleep(0.4)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(32)]
        threads.append(threading.Thread(target=operator))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "deadlock: threads still running"
        assert not errors, errors[:3]
        assert all(c > 0 for c in counts.values()), counts
        st = {s["id"]: s for s in mgr.status()}
        assert sum(s["evictions"] for s in st.values()) > 0  # the budget forced churn
        for mid in inputs:
            mgr.unload(mid)
        after = mgr.vram()
        assert all(z["used_mb"] == 0 for z in after["zones"].values())
        assert after["cpu"]["used_mb"] == 0
        assert mgr.device.used_mb() == pytest.approx(0, abs=1e-6)  # type: ignore[union-attr]
        assert before["budget_mb"] == after["budget_mb"]
    finally:
        mgr.close()


def test_hot_reload_while_requests_run(model_home: Path, tmp_path: Path) -> None:
    import onnx

    home = tmp_path / "home"
    shutil.copytree(model_home, home)
    mgr = _manager(home, sim_gpu_budget_mb=6144)
    try:
        h = mgr.handle("mobilefacenet")
        x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)
        ref = h.run(x)[0]
        old_version = h.ref.version
        errors: list[BaseException] = []
        versions: list[str] = []
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set():
                try:
                    np.testing.assert_allclose(h.run(x)[0], ref, atol=1e-5)
                    versions.append(h.ref.version)
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        # a new file version: same weights, new metadata -> a different sha256
        path = home / "mobilefacenet.onnx"
        model = onnx.load(str(path))
        model.metadata_props.add(key="release", value="2026-11-23")
        onnx.save(model, str(path.with_suffix(".new")))
        path.with_suffix(".new").replace(path)
        status = mgr.reload("mobilefacenet")
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not errors, errors[:3]
        assert status["version"] != old_version
        assert h.ref.version == status["version"] and versions[-1] == status["version"]
        assert old_version in versions  # requests ran on the old version before the swap
    finally:
        mgr.close()


def test_micro_batching_returns_each_caller_its_own_rows(model_home: Path) -> None:
    mgr = _manager(model_home, sim_gpu_budget_mb=6144, batch_wait_ms=30.0, batch_max=32)
    try:
        h = mgr.handle("w600k_mbf_folded")
        rng = np.random.default_rng(3)
        crops = rng.uniform(-1, 1, (16, 3, 112, 112)).astype(np.float32)
        with mgr.use("w600k_mbf_folded") as m:
            unbatched = np.concatenate([m.run(crops[i:i + 1])[0] for i in range(16)])
        results: dict[int, np.ndarray] = {}
        barrier = threading.Barrier(16)

        def call(i: int) -> None:
            barrier.wait()
            results[i] = h.run(crops[i:i + 1])[0]

        threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        got = np.concatenate([results[i] for i in range(16)])
        np.testing.assert_allclose(got, unbatched, atol=1e-5)
        sizes = [s for s in mgr.metrics.registry.collect()
                 if s.name == "facesocial_model_batch_size"][0]
        count = next(x.value for x in sizes.samples if x.name.endswith("_count"))
        total = next(x.value for x in sizes.samples if x.name.endswith("_sum"))
        assert total == 16 and count < 16  # every row served, in fewer calls than callers
    finally:
        mgr.close()


@pytest.mark.parametrize("model_id", ["antispoof_binary", "antispoof_print_replay"])
def test_free_batch_patch_keeps_outputs(model_home: Path, model_id: str) -> None:
    """The load-time patch frees the batch dimension without changing any output."""
    import onnxruntime as ort

    mgr = _manager(model_home, sim_gpu_budget_mb=6144)
    try:
        x = np.random.default_rng(5).uniform(0, 1, (6, 3, 128, 128)).astype(np.float32)
        raw = ort.InferenceSession(str(mgr.store.path(model_id)),
                                   providers=["CPUExecutionProvider"])
        single = np.concatenate([raw.run(None, {"input": x[i:i + 1]})[0] for i in range(6)])
        with mgr.use(model_id) as m:
            batched = m.run(x)[0]
        np.testing.assert_allclose(batched, single, atol=1e-5)
        assert {s["id"]: s["batched"] for s in mgr.status()}[model_id]
    finally:
        mgr.close()


def test_prelu_patch_keeps_the_embedder_outputs(model_home: Path, testdata: Path) -> None:
    """PRelu written as Max(x, a * x) at load time: the same embedding for real faces and for
    random inputs, and no PRelu left in the graph ONNX Runtime gets."""
    import onnx
    import onnxruntime as ort

    from facesocial.engine import Engine
    from facesocial.models.graph_patches import apply
    from facesocial.settings import Settings
    from facesocial.vision.alignment import align_faces

    path = model_home / "w600k_mbf_folded.onnx"
    patched = onnx.load_from_string(apply(path, "prelu_as_max"))
    assert not [n for n in patched.graph.node if n.op_type == "PRelu"]
    assert len([n for n in onnx.load(str(path)).graph.node if n.op_type == "PRelu"]) == 34
    engine = Engine(Settings(model_dir=model_home, intra_op_threads=1))
    try:
        rgb = engine.image(testdata / "faces" / "group_kit_rose.jpg")
        dets = engine.detect(rgb)
        crops = align_faces(rgb, dets.landmarks).astype(np.float32)
        faces = ((crops - 127.5) / 127.5).transpose(0, 3, 1, 2)
        noise = np.random.default_rng(3).normal(0, 1, (2, 3, 112, 112)).astype(np.float32)
        x = np.ascontiguousarray(np.concatenate([faces, noise]))
        raw = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        want = np.concatenate([raw.run(None, {"input.1": x[i:i + 1]})[0]
                               for i in range(len(x))])
        with engine.manager.use("w600k_mbf_folded") as m:  # the product's patched session
            got = np.concatenate([m.session.run(None, {"input.1": x[i:i + 1]})[0]
                                  for i in range(len(x))])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    finally:
        engine.close()
