"""Prometheus metrics of the model manager, in a registry the caller owns.

Tests and several managers in one process each get their own registry; the
HTTP service exposes the one its manager was built with.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ManagerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.memory = Gauge("facesocial_model_memory_mb",
                            "Model memory charged, by device and zone",
                            ["device", "zone"], registry=r)
        self.loads = Counter("facesocial_model_loads", "Model loads", ["model", "device"],
                             registry=r)
        self.evictions = Counter("facesocial_model_evictions", "Model evictions",
                                 ["model", "reason"], registry=r)
        self.fallbacks = Counter("facesocial_model_fallbacks", "Models placed on a fallback",
                                 ["model", "from_device", "to_device"], registry=r)
        self.queue_depth = Gauge("facesocial_model_queue_depth", "Rows waiting in a micro-batcher",
                                 ["model"], registry=r)
        self.batch_size = Histogram("facesocial_model_batch_size", "Rows per batched inference",
                                    ["model"], buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.latency = Histogram("facesocial_inference_seconds", "Inference latency",
                                 ["model", "device"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5),
                                 registry=r)
