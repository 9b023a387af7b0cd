"""One error shape for every response: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facesocial.errors import FaceSocialError
from facesocial.observability.logging import request_id_var

log = logging.getLogger("facesocial.api")

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
               413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_error",
               429: "rate_limited"}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {},
                      "request_id": request_id_var.get()}}


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    headers = {**(headers or {}), "X-Error-Code": code}
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(FaceSocialError)
    async def _facesocial(request: Request, exc: FaceSocialError) -> JSONResponse:
        headers = {}
        retry = exc.details.get("retry_after") if isinstance(exc.details, dict) else None
        if retry is not None:
            headers["Retry-After"] = str(int(max(1, round(float(retry)))))
        if exc.status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        # families of errors (401, 403) carry their precise, stable subcode as the code
        code = getattr(exc, "subcode", "") or exc.code
        details = _jsonable(exc.details)
        if code != exc.code:
            details = {**details, "family": exc.code}
        return error_response(exc.status, code, exc.message, details, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                  for e in exc.errors()]
        return error_response(422, "validation_error", "the request is not valid",
                              {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), None,
                              dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "an internal error occurred")


def _jsonable(details: Any) -> Any:
    if isinstance(details, dict):
        return {k: _jsonable(v) for k, v in details.items()}
    if isinstance(details, (list, tuple)):
        return [_jsonable(v) for v in details]
    if isinstance(details, (str, int, float, bool)) or details is None:
        return details
    return str(details)
