"""Request ids, access logs and HTTP metrics for every request."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

from facesocial.observability.logging import request_id_var
from facesocial.observability.metrics import HttpMetrics

log = logging.getLogger("facesocial.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


API_PREFIX = "/api/v1"


def route_template(request: Request) -> str:
    """The matched route's path template (e.g. /api/v1/gallery/identities/{identity_id}),
    so metrics and rate limits do not explode into one series per id."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if not path:
        return "unmatched"
    return path if path.startswith(API_PREFIX) else API_PREFIX + path


class RequestContext(BaseHTTPMiddleware):
    def __init__(self, app: object, metrics: HttpMetrics) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.metrics = metrics

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        incoming = request.headers.get("x-request-id", "")
        rid = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            request_id_var.reset(token)
        elapsed = time.perf_counter() - t0
        endpoint = route_template(request)
        self.metrics.requests.labels(request.method, endpoint, str(response.status_code)).inc()
        self.metrics.latency.labels(request.method, endpoint).observe(elapsed)
        code = response.headers.get("x-error-code")
        if code:
            self.metrics.errors.labels(endpoint, code).inc()
        response.headers["X-Request-ID"] = rid
        log.info("%s %s %s", request.method, request.url.path, response.status_code,
                 extra={"request_id": rid, "method": request.method, "path": request.url.path,
                        "status": response.status_code, "ms": round(elapsed * 1000, 1)})
        return response
