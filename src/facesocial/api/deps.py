"""FastAPI dependencies: app state, the authenticated principal, scopes, rate limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Depends, Request

from facesocial.api.middleware import route_template
from facesocial.errors import InsufficientScope, TokenRevoked, Unauthorized
from facesocial.security.apikeys import authenticate_api_key, has_scope
from facesocial.security.ratelimit import enforce
from facesocial.security.users import get_user

#: scopes a user gets from its role (API keys carry their own)
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "admin": ("*",),
    "user": ("face", "gallery", "batch", "session"),
    "service": ("face", "gallery", "batch", "session"),
}
_FACE_ROUTES = "/api/v1/face/"


@dataclass(frozen=True, slots=True)
class Principal:
    id: str  # "user:<id>" or "apikey:<prefix>"
    kind: str  # "user" | "api_key"
    role: str
    scopes: tuple[str, ...]

    def allows(self, scope: str) -> bool:
        return has_scope(self.scopes, scope)


class AppState(Protocol):  # implemented by facesocial.api.state.ServiceState
    settings: Any
    engine: Any
    gallery: Any
    cache: Any
    http_metrics: Any
    tokens: Any
    limiter: Any
    jobs: Any  # facesocial.jobs.service.JobService
    auth_sessions: Any  # facesocial.sessions.service.SessionService

    def session(self) -> Any: ...
    def audit(self, action: str, principal: Principal | None, target: str | None,
              details: dict[str, Any], outcome: str = "ok") -> None: ...
    def readiness(self) -> dict[str, dict[str, Any]]: ...
    def model_versions(self, tasks: tuple[str, ...], detector: str | None,
                       embedder: str | None) -> list[str]: ...


def app_state(request: Request) -> AppState:
    return request.app.state.fs  # type: ignore[no-any-return]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def authenticate(request: Request, state: AppState) -> Principal:
    """A principal from a Bearer access token or an X-API-Key header (401 otherwise)."""
    return authenticate_credentials(state, api_key=request.headers.get("x-api-key"),
                                    token=_bearer(request))


def authenticate_credentials(state: AppState, *, api_key: str | None = None,
                             token: str | None = None) -> Principal:
    """A principal from an API key or an access token, however they arrived (headers,
    a WebSocket URL or its first message)."""
    if api_key:
        with state.session() as session:
            row = authenticate_api_key(session, api_key)
            return Principal(f"apikey:{row.prefix}", "api_key", row.role, tuple(row.scopes or ()))
    if token is None:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' or "
                           "'X-API-Key: <key>'")
    claims = state.tokens.decode_access(token)
    # a signed token outlives a deactivation or a role change: check the user now
    with state.session() as session:
        user = get_user(session, claims.sub)
        if user is None or not user.active:
            raise TokenRevoked("the token's user is deactivated or gone")
        role = user.role
    return Principal(f"user:{claims.sub}", "user", role, ROLE_SCOPES.get(role, ()))


def require(scope: str | None = None) -> Any:
    """Dependency: an authenticated principal holding ``scope`` (None: any), rate limited
    per principal and endpoint."""

    def dependency(request: Request, state: AppState = Depends(app_state)) -> Principal:
        principal = authenticate(request, state)
        if scope is not None and not principal.allows(scope):
            raise InsufficientScope(f"this endpoint needs the '{scope}' scope", scope=scope)
        endpoint = route_template(request)
        face = endpoint.startswith(_FACE_ROUTES)
        limit = (state.settings.rate_limit_face_per_minute if face
                 else state.settings.rate_limit_per_minute)
        enforce(state.limiter, f"{principal.id}|{request.method}|{endpoint}", limit)
        request.state.principal = principal
        return principal

    return dependency
