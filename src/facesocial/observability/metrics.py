"""HTTP metrics in a registry owned by the app (tests build their own app and registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("facesocial_http_requests", "HTTP requests",
                                ["method", "endpoint", "status"], registry=r)
        self.latency = Histogram("facesocial_http_request_seconds", "HTTP request latency",
                                 ["method", "endpoint"],
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                                 registry=r)
        self.errors = Counter("facesocial_http_errors", "HTTP error responses by code",
                              ["endpoint", "code"], registry=r)


def render(*registries: CollectorRegistry) -> bytes:
    return b"".join(generate_latest(r) for r in registries)
