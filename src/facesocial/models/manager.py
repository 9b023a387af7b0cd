"""ModelManager: the one owner of model sessions, within a device-memory budget.

Every ONNX model the engine runs is taken through :meth:`ModelManager.use`
(or a :class:`ManagedModel` handle that calls it). The manager

* places each model in its zone (critical / high / flexible, from the
  catalog's ``serving`` block) on the device when the zone has room,
* otherwise evicts least-recently-used idle models of equal or lower priority
  in that zone (never one in use, never a critical or pinned one),
* otherwise follows the model's fallback rule: run on CPU, use another model,
  or wait for room until ``load_timeout_s`` and fail with a clear error,
* keeps a CPU memory budget the same way,
* bounds concurrent inferences per model (realtime before batch work),
  micro-batches batch-independent embedding and anti-spoof models,
* reloads a model's file without failing requests in flight,
* reports status and Prometheus metrics.

Placement uses a model's estimated footprint until it is measured after
warm-up (process RSS growth on CPU, NVML memory growth on a real GPU); the
larger of the two is then charged.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facesocial.errors import ModelError, ModelLoadFailed
from facesocial.models.batching import MicroBatcher, PrioritySemaphore
from facesocial.models.catalog import Catalog, ModelSpec
from facesocial.models.devices import Device, MiB, SimulatedGpu, detect_device
from facesocial.models.metrics import ManagerMetrics
from facesocial.models.store import ModelStore, sha256_file
from facesocial.runtime import LoadedModel, ModelRef, SessionFactory
from facesocial.settings import Settings

log = logging.getLogger(__name__)

ZONES = ("critical", "high", "flexible")
CPU = "cpu"
_BATCHED_TASKS = ("face_embedding", "anti_spoofing")


class ModelCapacityError(ModelError):
    code = "model_capacity"
    status = 503


@dataclass(frozen=True, slots=True)
class ServingPolicy:
    zone: str
    priority: int
    fallback: str  # "cpu" | "none" | "model:<id>"
    estimated_mb: float


def estimate_mb(spec: ModelSpec) -> float:
    """Footprint estimate before measurement: weights held twice (initialisers and
    the optimised graph) plus a fixed workspace for activations and the arena."""
    return float(math.ceil(2.0 * spec.bytes / MiB) + 24)


def policy_for(spec: ModelSpec) -> ServingPolicy:
    s = spec.extra.get("serving") or {}
    return ServingPolicy(zone=s.get("zone", "flexible"), priority=int(s.get("priority", 0)),
                         fallback=s.get("fallback", "cpu"),
                         estimated_mb=float(s.get("estimated_mb") or estimate_mb(spec)))


@dataclass
class _Entry:
    spec: ModelSpec
    policy: ServingPolicy
    sem: PrioritySemaphore
    state: str = "unloaded"  # unloaded | loading | loaded
    model: LoadedModel | None = None
    placed: str = CPU  # CPU or the device name
    charged_mb: float = 0.0
    measured_mb: float | None = None
    refs: int = 0
    pinned: bool = False
    last_use: float = 0.0
    hits: int = 0
    loads: int = 0
    load_ms: float = 0.0
    fallbacks: int = 0
    evictions: int = 0
    batcher: MicroBatcher | None = None
    error: str | None = None
    batched_rows: list[int] = field(default_factory=list)

    @property
    def on_device(self) -> bool:
        return self.state in ("loaded", "loading") and self.placed != CPU


def _rss_mb() -> float:
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / MiB
    except Exception:  # noqa: BLE001 - measurement is best effort
        return 0.0


def _batch_independent(model: LoadedModel) -> bool:
    shape = model.session.get_inputs()[0].shape
    dynamic = not isinstance(shape[0], int) or shape[0] != 1
    return dynamic and not model.spec.extra.get("batch_dependent", False)


class ModelManager:
    """Loads, places, evicts and serves models; thread-safe."""

    def __init__(self, settings: Settings, catalog: Catalog, store: ModelStore,
                 sessions: SessionFactory | None = None, device: Device | None | str = "auto",
                 metrics: ManagerMetrics | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.sessions = sessions or SessionFactory(settings)
        if isinstance(device, str):
            mode = settings.device if device == "auto" else device
            device = detect_device(mode, settings.sim_gpu_budget_mb, settings.gpu_index)
        self.device: Device | None = device
        self.metrics = metrics or ManagerMetrics()
        self._cond = threading.Condition(threading.RLock())
        self._entries: dict[str, _Entry] = {}
        self.budget_mb = self._device_budget()
        self.zone_budget = self._zone_budgets(self.budget_mb)
        self.cpu_budget_mb = float(settings.cpu_budget_mb)
        self._closed = False

    # ---------------------------------------------------------------- budgets
    def _device_budget(self) -> float:
        if self.device is None:
            return 0.0
        if self.settings.gpu_budget_mb:
            return float(min(self.settings.gpu_budget_mb, self.device.total_mb()))
        return float(self.device.free_mb())

    def _zone_budgets(self, budget: float) -> dict[str, float]:
        split = self.settings.zone_split_mb
        total = sum(split)
        return {z: budget * part / total for z, part in zip(ZONES, split, strict=True)}

    def _zone_used(self, zone: str) -> float:
        return sum(e.charged_mb for e in self._entries.values()
                   if e.on_device and e.policy.zone == zone)

    def _cpu_used(self) -> float:
        return sum(e.charged_mb for e in self._entries.values()
                   if e.state in ("loaded", "loading") and e.placed == CPU)

    # ---------------------------------------------------------------- entries
    def _entry(self, model_id: str) -> _Entry:
        with self._cond:
            if model_id not in self._entries:
                spec = self.catalog.get(model_id)
                self._entries[model_id] = _Entry(
                    spec=spec, policy=policy_for(spec),
                    sem=PrioritySemaphore(self.settings.model_concurrency))
            return self._entries[model_id]

    # -------------------------------------------------------------- placement
    def _victims(self, entry: _Entry, on_device: bool) -> list[_Entry]:
        """Idle models that may make room for ``entry``, least recently used first."""
        out = []
        for e in self._entries.values():
            if e is entry or e.state != "loaded" or e.refs > 0 or e.pinned:
                continue
            if e.policy.zone == "critical" or e.policy.priority > entry.policy.priority:
                continue
            if on_device and (e.placed == CPU or e.policy.zone != entry.policy.zone):
                continue
            if not on_device and e.placed != CPU:
                continue
            out.append(e)
        return sorted(out, key=lambda e: e.last_use)

    def _fits_device(self, entry: _Entry, need: float) -> bool:
        zone = entry.policy.zone
        if self._zone_used(zone) + need > self.zone_budget[zone] + 1e-6:
            return False
        if self.device is not None and not self.device.simulated:
            return self.device.free_mb() >= need
        return True

    def _fits_cpu(self, need: float) -> bool:
        return self._cpu_used() + need <= self.cpu_budget_mb + 1e-6

    def _make_room(self, entry: _Entry, need: float, on_device: bool) -> bool:
        fits = (lambda: self._fits_device(entry, need)) if on_device else (
            lambda: self._fits_cpu(need))
        if fits():
            return True
        for victim in self._victims(entry, on_device):
            self._evict(victim, reason="room")
            if fits():
                return True
        return fits()

    def _place(self, entry: _Entry, deadline: float, device: str | None) -> str:
        """Decide where ``entry`` loads; may evict, wait, or raise. Lock held."""
        need = self._charge_for(entry, on_device=self.device is not None and device != CPU)
        while True:
            if self.device is not None and device != CPU:
                if self._make_room(entry, need, on_device=True):
                    return self.device.name
                if entry.policy.fallback == "cpu" or device == "any":
                    self._fallback(entry, "device budget spent")
                else:
                    if not self._wait(deadline):
                        raise ModelCapacityError(
                            f"no room for '{entry.spec.id}' in the {entry.policy.zone} zone "
                            f"({self._zone_used(entry.policy.zone):.0f} of "
                            f"{self.zone_budget[entry.policy.zone]:.0f} MB in use) and its "
                            f"fallback rule does not allow CPU",
                            model=entry.spec.id, zone=entry.policy.zone)
                    continue
            if self._make_room(entry, need, on_device=False):
                return CPU
            if not self._wait(deadline):
                raise ModelCapacityError(
                    f"no room for '{entry.spec.id}' in the CPU budget "
                    f"({self._cpu_used():.0f} of {self.cpu_budget_mb:.0f} MB in use)",
                    model=entry.spec.id)

    def _fallback(self, entry: _Entry, why: str) -> None:
        entry.fallbacks += 1
        self.metrics.fallbacks.labels(entry.spec.id, "device", CPU).inc()
        log.warning("%s runs on CPU: %s", entry.spec.id, why)

    def _wait(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self._cond.wait(min(remaining, 0.5))
        return time.monotonic() < deadline

    # ---------------------------------------------------------------- loading
    def _ensure_loaded(self, entry: _Entry, deadline: float, device: str | None = None) -> None:
        """Lock held on entry and exit; released while the session is built."""
        while entry.state != "loaded":
            if entry.state == "loading":
                if not self._wait(deadline):
                    raise ModelCapacityError(f"timed out waiting for '{entry.spec.id}' to load",
                                             model=entry.spec.id)
                continue
            placed = self._place(entry, deadline, device)
            self._load_into(entry, placed)

    def _load_into(self, entry: _Entry, placed: str, retry: bool = True) -> None:
        entry.state, entry.placed = "loading", placed
        entry.charged_mb = self._charge_for(entry, on_device=placed != CPU)
        self._sim_charge(entry, +1)
        self._cond.release()
        try:
            model, measured, ms = self._build(entry.spec, placed, entry.charged_mb)
        except ModelLoadFailed as exc:
            self._cond.acquire()
            self._sim_charge(entry, -1)
            entry.state, entry.charged_mb, entry.error = "unloaded", 0.0, exc.message
            self._cond.notify_all()
            oom = "memory" in exc.message.lower() or "cuda" in exc.message.lower()
            if placed != CPU and oom and retry:
                for victim in self._victims(entry, on_device=True):
                    self._evict(victim, reason="oom")
                    break
                self._load_into(entry, placed, retry=False)
                return
            if placed != CPU and entry.policy.fallback == "cpu":
                self._fallback(entry, f"load failed on {placed}: {exc.message}")
                self._load_into(entry, CPU, retry=False)
                return
            raise
        except BaseException:
            self._cond.acquire()
            self._sim_charge(entry, -1)
            entry.state, entry.charged_mb = "unloaded", 0.0
            self._cond.notify_all()
            raise
        self._cond.acquire()
        if measured is not None:
            entry.measured_mb = measured
            real_gpu = placed != CPU and self.device is not None and not self.device.simulated
            # On a real GPU, NVML growth is the truth: charge it when larger than the estimate.
            # RSS growth on CPU is noisy under concurrency, so CPU and simulated accounting
            # stay on the (deterministic) estimate; the measurement is reported in status.
            if real_gpu and measured > entry.charged_mb:
                self._sim_charge(entry, -1)
                entry.charged_mb = measured
                self._sim_charge(entry, +1)
        entry.model, entry.state, entry.error = model, "loaded", None
        entry.loads += 1
        entry.load_ms = ms
        entry.last_use = time.monotonic()
        self._setup_batcher(entry)
        self.metrics.loads.labels(entry.spec.id, placed).inc()
        self._update_memory_metrics()
        self._cond.notify_all()

    def _charge_for(self, entry: _Entry, on_device: bool) -> float:
        real_gpu = on_device and self.device is not None and not self.device.simulated
        if real_gpu and entry.measured_mb:
            return max(entry.measured_mb, entry.policy.estimated_mb)
        return entry.policy.estimated_mb

    def _sim_charge(self, entry: _Entry, sign: int) -> None:
        if isinstance(self.device, SimulatedGpu) and entry.placed != CPU:
            self.device.charge(sign * entry.charged_mb)

    def _build(self, spec: ModelSpec, placed: str,
               limit_mb: float) -> tuple[LoadedModel, float | None, float]:
        t0 = time.perf_counter()
        path = self.store.path(spec.id)
        real_gpu = placed != CPU and self.device is not None and not self.device.simulated
        before = self.device.used_mb() if real_gpu else _rss_mb()  # type: ignore[union-attr]
        options = None
        if real_gpu:
            options = {"CUDAExecutionProvider": {
                "device_id": self.settings.gpu_index,
                # the zone is the cap: activations at 640 px exceed any weights-based guess
                "gpu_mem_limit": int(max(self.zone_budget[policy_for(spec).zone], limit_mb)
                                     * MiB),
                "arena_extend_strategy": "kSameAsRequested"}}
        model = self.sessions.create(spec, path, device="cuda" if real_gpu else CPU,
                                     provider_options=options)
        if real_gpu and model.device != "cuda":
            raise ModelLoadFailed(f"CUDA provider refused '{spec.id}'", model=spec.id)
        if placed != CPU and not real_gpu:
            model.device = placed  # simulated device: runs on CPU, accounted on "sim:0"
        model.version = self._file_version(spec, path)
        if self.settings.warmup:
            _warm_up(model)
        after = self.device.used_mb() if real_gpu else _rss_mb()  # type: ignore[union-attr]
        measured = after - before if after and before and after > before else None
        return model, measured, (time.perf_counter() - t0) * 1000

    def _file_version(self, spec: ModelSpec, path: Any) -> str:
        """The catalog version when the file is the catalog's, else its own sha256 prefix."""
        digest = sha256_file(path)
        expected = self.store.derived().get(spec.id, {}).get("sha256") or spec.sha256
        return spec.version if digest == expected else digest[:12]

    def _setup_batcher(self, entry: _Entry) -> None:
        if entry.batcher is not None or not self.settings.batching or entry.model is None:
            return
        if entry.spec.task not in _BATCHED_TASKS or not _batch_independent(entry.model):
            return
        # Measured (bench/batching.py, BENCHMARKS.md): on CPU a face costs no less in a batch
        # and one batch at a time loses to `model_concurrency` parallel calls (0.37-1.02x),
        # so micro-batching serves device-placed models only.
        if entry.placed == CPU and self.settings.batching_on_cpu is False:
            return
        model_id = entry.spec.id
        entry.batcher = MicroBatcher(
            lambda rows: self._infer_direct(model_id, rows), max_batch=self.settings.batch_max,
            max_wait_ms=self.settings.batch_wait_ms, name=f"batch-{model_id}",
            on_batch=lambda n: self.metrics.batch_size.labels(model_id).observe(n))

    # -------------------------------------------------------------- eviction
    def _evict(self, entry: _Entry, reason: str) -> None:
        """Drop an idle model's session. Lock held."""
        self._sim_charge(entry, -1)
        log.info("evicting %s from %s (%s)", entry.spec.id, entry.placed, reason)
        entry.model, entry.state, entry.charged_mb = None, "unloaded", 0.0
        entry.evictions += 1
        if entry.batcher is not None:
            batcher, entry.batcher = entry.batcher, None
            threading.Thread(target=batcher.close, daemon=True).start()
        self.metrics.evictions.labels(entry.spec.id, reason).inc()
        self._update_memory_metrics()
        self._cond.notify_all()

    # ------------------------------------------------------------------ usage
    @contextlib.contextmanager
    def use(self, model_id: str, timeout: float | None = None) -> Iterator[LoadedModel]:
        """Hold a loaded model for the duration of the block (never evicted meanwhile)."""
        model = self.acquire(model_id, timeout)
        try:
            yield model
        finally:
            self.release(model_id)

    def acquire(self, model_id: str, timeout: float | None = None) -> LoadedModel:
        entry = self._entry(model_id)
        fb = entry.policy.fallback
        deadline = time.monotonic() + (timeout or self.settings.load_timeout_s)
        with self._cond:
            if self._closed:
                raise ModelError("the model manager is closed")
            try:
                self._ensure_loaded(entry, deadline)
            except ModelCapacityError:
                if fb.startswith("model:"):
                    return self.acquire(fb.split(":", 1)[1], timeout)
                raise
            entry.refs += 1
            entry.hits += 1
            entry.last_use = time.monotonic()
            assert entry.model is not None  # noqa: S101 - invariant of state "loaded"
            return entry.model

    def release(self, model_id: str) -> None:
        with self._cond:
            entry = self._entries[model_id]
            entry.refs = max(0, entry.refs - 1)
            self._cond.notify_all()

    def handle(self, model_id: str) -> ManagedModel:
        self._entry(model_id)
        return ManagedModel(self, model_id)

    def infer(self, model_id: str, x: np.ndarray) -> list[np.ndarray]:
        """Run a model on one input tensor: micro-batched when the model allows it."""
        entry = self._entry(model_id)
        if entry.batcher is None and entry.state != "loaded":
            with self.use(model_id):
                pass  # load (and set up the batcher) first
        batcher = entry.batcher
        if batcher is not None and x.ndim >= 1 and len(x) > 0:
            self.metrics.queue_depth.labels(model_id).set(batcher.depth())
            try:
                return [batcher.run(x)]
            except RuntimeError as exc:
                if "closed" not in str(exc):
                    raise
        return self._infer_direct(model_id, x, all_outputs=True)

    def _infer_direct(self, model_id: str, x: np.ndarray,
                      all_outputs: bool = False) -> Any:
        entry = self._entries[model_id]
        with entry.sem.hold(), self.use(model_id) as model:
            t0 = time.perf_counter()
            out = model.run(x)
            self.metrics.latency.labels(model_id, model.device).observe(
                time.perf_counter() - t0)
        return out if all_outputs else out[0]

    # ------------------------------------------------------------- operations
    def load(self, model_id: str, device: str | None = None) -> dict[str, Any]:
        entry = self._entry(model_id)
        with self._cond:
            if device == CPU and entry.state == "loaded" and entry.placed != CPU:
                self._wait_idle(entry)
                self._evict(entry, reason="moved")
            self._ensure_loaded(entry, time.monotonic() + self.settings.load_timeout_s, device)
            return self._status(entry)

    def _wait_idle(self, entry: _Entry) -> None:
        deadline = time.monotonic() + self.settings.load_timeout_s
        while entry.refs > 0:
            if not self._wait(deadline):
                raise ModelCapacityError(f"'{entry.spec.id}' stayed in use", model=entry.spec.id)

    def unload(self, model_id: str) -> dict[str, Any]:
        entry = self._entry(model_id)
        with self._cond:
            if entry.state == "loaded":
                self._wait_idle(entry)
                self._evict(entry, reason="unload")
            return self._status(entry)

    def pin(self, model_id: str, pinned: bool = True) -> dict[str, Any]:
        entry = self._entry(model_id)
        with self._cond:
            entry.pinned = pinned
            return self._status(entry)

    def unpin(self, model_id: str) -> dict[str, Any]:
        return self.pin(model_id, False)

    def reload(self, model_id: str) -> dict[str, Any]:
        """Swap in the model file's current version; requests in flight keep the old session."""
        entry = self._entry(model_id)
        with self._cond:
            if entry.state != "loaded":
                self._ensure_loaded(entry, time.monotonic() + self.settings.load_timeout_s)
                return self._status(entry)
            placed, limit = entry.placed, entry.charged_mb
        new, _measured, ms = self._build(entry.spec, placed, limit)
        with self._cond:
            old, entry.model = entry.model, new
            entry.loads += 1
            entry.load_ms = ms
            log.info("reloaded %s: %s -> %s", model_id, old.version if old else None, new.version)
            self._cond.notify_all()
            return self._status(entry)

    def optimize(self) -> list[dict[str, Any]]:
        """Re-pack by priority: unload idle unpinned models, reload them highest priority first,
        so the most important models get the device and the rest fall back as their rules say."""
        with self._cond:
            idle = [e for e in self._entries.values() if e.state == "loaded" and e.refs == 0
                    and not e.pinned and e.policy.zone != "critical"]
            for e in idle:
                self._evict(e, reason="optimize")
            for e in sorted(idle, key=lambda e: -e.policy.priority):
                with contextlib.suppress(ModelError):
                    self._ensure_loaded(e, time.monotonic() + self.settings.load_timeout_s)
            return self.status()

    def warm_up(self, zones: tuple[str, ...] = ("critical",)) -> list[str]:
        """Load every installed model of ``zones`` (at service start)."""
        done = []
        for spec in self.catalog:
            onnx = spec.source.kind in ("url", "archive", "derived")
            if onnx and policy_for(spec).zone in zones and self.store.is_installed(spec.id):
                self.load(spec.id)
                done.append(spec.id)
        return done

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for e in self._entries.values():
                if e.state == "loaded":
                    self._evict(e, reason="shutdown")

    # ----------------------------------------------------------------- status
    def _status(self, e: _Entry) -> dict[str, Any]:
        return {
            "id": e.spec.id, "task": e.spec.task, "zone": e.policy.zone,
            "priority": e.policy.priority, "fallback": e.policy.fallback, "state": e.state,
            "device": e.placed if e.state != "unloaded" else None,
            "version": e.model.version if e.model else None,
            "estimated_mb": e.policy.estimated_mb,
            "measured_mb": None if e.measured_mb is None else round(e.measured_mb, 1),
            "charged_mb": round(e.charged_mb, 1), "in_use": e.refs, "pinned": e.pinned,
            "hits": e.hits, "loads": e.loads, "evictions": e.evictions,
            "fallbacks": e.fallbacks, "load_ms": round(e.load_ms, 1),
            "idle_s": None if not e.last_use else round(time.monotonic() - e.last_use, 1),
            "batched": e.batcher is not None, "error": e.error,
        }

    def status(self) -> list[dict[str, Any]]:
        with self._cond:
            return [self._status(e) for e in self._entries.values()]

    def vram(self) -> dict[str, Any]:
        with self._cond:
            zones = {z: {"budget_mb": round(self.zone_budget[z], 1),
                         "used_mb": round(self._zone_used(z), 1)} for z in ZONES}
            dev = self.device
            return {
                "device": None if dev is None else dev.name,
                "simulated": bool(dev is not None and dev.simulated),
                "budget_mb": round(self.budget_mb, 1),
                "device_total_mb": None if dev is None else round(dev.total_mb(), 1),
                "device_free_mb": None if dev is None else round(dev.free_mb(), 1),
                "zones": zones,
                "cpu": {"budget_mb": self.cpu_budget_mb, "used_mb": round(self._cpu_used(), 1)},
            }

    def _update_memory_metrics(self) -> None:
        for z in ZONES:
            self.metrics.memory.labels("device", z).set(self._zone_used(z))
        self.metrics.memory.labels(CPU, "all").set(self._cpu_used())


class ManagedModel:
    """A stand-in for :class:`LoadedModel` that goes through the manager on every call.

    Adapters keep a handle, not a session, so the manager may evict, move or
    reload the model between calls.
    """

    def __init__(self, manager: ModelManager, model_id: str) -> None:
        self._manager = manager
        self.id = model_id
        self.spec = manager.catalog.get(model_id)

    @property
    def session(self) -> Any:
        """The current session (for input/output metadata)."""
        with self._manager.use(self.id) as model:
            return model.session

    @property
    def ref(self) -> ModelRef:
        entry = self._manager._entry(self.id)
        if entry.model is not None:
            return entry.model.ref
        return ModelRef(self.id, self.spec.version, CPU)

    @property
    def device(self) -> str:
        return self.ref.device

    @property
    def path(self) -> Any:
        return self._manager.store.path(self.id)

    @property
    def input_name(self) -> str:
        return str(self.session.get_inputs()[0].name)

    def run(self, feed: dict[str, np.ndarray] | np.ndarray) -> list[np.ndarray]:
        if isinstance(feed, dict):
            if len(feed) == 1:
                return self._manager.infer(self.id, next(iter(feed.values())))
            with self._manager.use(self.id) as model:
                return model.run(feed)
        return self._manager.infer(self.id, feed)


def _warm_up(model: LoadedModel) -> None:
    """One inference on zeros so the first request does not pay for allocation."""
    inp = model.session.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    if len(shape) == 4 and not all(isinstance(d, int) and d > 0 for d in inp.shape[2:]):
        shape[2:] = [64, 64]
    try:
        model.run(np.zeros(shape, dtype=np.float32))
    except Exception:  # noqa: BLE001 - warm-up is best effort; real errors surface on use
        log.debug("warm-up skipped for %s", model.spec.id, exc_info=True)
