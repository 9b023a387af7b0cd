"""/auth: password login with short-lived JWTs and rotating refresh tokens; API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from facesocial.api.deps import AppState, Principal, app_state, require
from facesocial.security import apikeys, users
from facesocial.security.ratelimit import enforce

router = APIRouter(prefix="/auth", tags=["auth"])


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_expires_in: int


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    scopes: list[str] = Field(min_length=1, max_length=8)
    role: str = Field(default="service", pattern="^(admin|user|service)$")


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    role: str
    created_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    key: str | None = Field(default=None, description="the full key; only in the create response")


class UserIn(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=8, max_length=1024)
    role: str = Field(default="user", pattern="^(admin|user|service)$")


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _pair(pair: Any) -> TokenOut:
    return TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token,
                    expires_in=pair.expires_in, refresh_expires_in=pair.refresh_expires_in)


@router.post("/login", response_model=TokenOut)
async def login(body: LoginIn, request: Request,
                state: AppState = Depends(app_state)) -> TokenOut:
    """Username and password (argon2) -> access token (JWT) and refresh token."""
    enforce(state.limiter, f"login|{_client(request)}", state.settings.rate_limit_login_per_minute)

    def run() -> TokenOut:
        with state.session() as session:
            try:
                user = users.authenticate(session, body.username, body.password)
            except Exception:
                state.audit("auth.login", None, body.username[:128], {}, outcome="denied")
                raise
            pair = state.tokens.issue_pair(session, user)
            state.audit("auth.login", Principal(f"user:{user.id}", "user", user.role, ()),
                        user.id, {})
            return _pair(pair)

    return await run_in_threadpool(run)


@router.post("/refresh", response_model=TokenOut)
async def refresh(body: RefreshIn, request: Request,
                  state: AppState = Depends(app_state)) -> TokenOut:
    """Rotate: the presented refresh token is spent; reusing a spent one revokes the login."""
    enforce(state.limiter, f"refresh|{_client(request)}",
            state.settings.rate_limit_login_per_minute)

    def run() -> TokenOut:
        with state.session() as session:
            return _pair(state.tokens.rotate(session, body.refresh_token))

    return await run_in_threadpool(run)


@router.post("/logout")
async def logout(body: RefreshIn, state: AppState = Depends(app_state),
                 principal: Principal = Depends(require())) -> dict[str, bool]:
    """Revoke the refresh token's whole login (family)."""

    def run() -> bool:
        with state.session() as session:
            return bool(state.tokens.logout(session, body.refresh_token))

    revoked = await run_in_threadpool(run)
    state.audit("auth.logout", principal, None, {"revoked": revoked})
    return {"revoked": revoked}


def _key_out(info: Any, key: str | None = None) -> ApiKeyOut:
    return ApiKeyOut(id=info.id, name=info.name, prefix=info.prefix, scopes=list(info.scopes),
                     role=info.role, created_at=info.created_at, revoked_at=info.revoked_at,
                     last_used_at=info.last_used_at, key=key)


@router.post("/keys", response_model=ApiKeyOut, status_code=201)
def create_key(body: ApiKeyIn, state: AppState = Depends(app_state),
               principal: Principal = Depends(require("admin"))) -> ApiKeyOut:
    """Create an API key (admins). The full key is in this response only."""
    with state.session() as session:
        created = apikeys.create_api_key(session, body.name, body.scopes, role=body.role,
                                         created_by=principal.id)
    state.audit("apikey.create", principal, created.info.id,
                {"name": body.name, "scopes": body.scopes})
    return _key_out(created.info, created.key)


@router.get("/keys", response_model=list[ApiKeyOut])
def list_keys(include_revoked: bool = False, state: AppState = Depends(app_state),
              _: Principal = Depends(require("admin"))) -> list[ApiKeyOut]:
    with state.session() as session:
        return [_key_out(i) for i in apikeys.list_api_keys(session,
                                                            include_revoked=include_revoked)]


@router.delete("/keys/{key_id}", response_model=ApiKeyOut)
def revoke_key(key_id: str, state: AppState = Depends(app_state),
               principal: Principal = Depends(require("admin"))) -> ApiKeyOut:
    with state.session() as session:
        info = apikeys.revoke_api_key(session, key_id)
    state.audit("apikey.revoke", principal, key_id, {})
    return _key_out(info)


@router.post("/users", status_code=201)
def create_user(body: UserIn, state: AppState = Depends(app_state),
                principal: Principal = Depends(require("admin"))) -> dict[str, Any]:
    """Create a user (admins)."""
    with state.session() as session:
        user = users.create_user(session, body.username, body.password, body.role)
        out = {"id": user.id, "username": user.username, "role": user.role}
    state.audit("user.create", principal, out["id"], {"username": body.username,
                                                      "role": body.role})
    return out
