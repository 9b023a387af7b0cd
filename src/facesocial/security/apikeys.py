"""API keys: machine credentials, shown once, stored hashed, scoped to endpoint groups.

Format: ``fsk_<prefix>_<secret>``; ``prefix`` is 12 hex characters (public, the
lookup key, shown in listings), ``secret`` is 32 random bytes urlsafe-base64
(43 characters, may itself contain ``_`` and ``-``).

Stored: the prefix and ``hmac-sha256$<hex>`` = HMAC-SHA256 over
``prefix:secret`` under a fixed, versioned label. Why not argon2: the secret
has 256 bits of entropy, so nothing can be brute-forced from a leaked hash and
a slow hash buys no security; but it would cost ~50 ms CPU and 64 MiB per
*request* (every API call authenticates), a latency tax and a DoS lever. Why
not peppered with ``settings.secret_key``: rotating the JWT secret would then
silently invalidate every machine credential, for no gain at this entropy.
Comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from facesocial.db.models import ApiKey
from facesocial.errors import ApiKeyInvalid, InsufficientScope, InvalidInput, NotFound
from facesocial.security.users import ROLES

KEY_PREFIX = "fsk"
SCOPES: tuple[str, ...] = ("face", "gallery", "batch", "session", "admin", "*")
_HASH_LABEL = b"facesocial-api-key-v1"
_HASH_SCHEME = "hmac-sha256$"
_KEY_RE = re.compile(r"^fsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_LAST_USED_EVERY = timedelta(seconds=60)  # at most one write per key per minute


def _hash_secret(prefix: str, secret: str) -> str:
    mac = hmac.new(_HASH_LABEL, f"{prefix}:{secret}".encode(), hashlib.sha256).hexdigest()
    return _HASH_SCHEME + mac


def _as_utc(dt: datetime) -> datetime:
    """SQLite gives naive datetimes back even for timezone=True columns: they are UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _opt_utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else _as_utc(dt)


def parse_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    if not isinstance(key, str) or len(key) > 100:
        return None
    m = _KEY_RE.fullmatch(key.strip())
    return (m.group(1), m.group(2)) if m else None


def validate_scopes(scopes: Iterable[str]) -> list[str]:
    out: list[str] = []
    for s in scopes:
        if s not in SCOPES:
            raise InvalidInput(f"unknown scope {s!r}; scopes are {', '.join(SCOPES)}",
                               field="scopes")
        if s not in out:
            out.append(s)
    if not out:
        raise InvalidInput("an API key needs at least one scope", field="scopes")
    return out


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: never the secret, nor its hash. Datetimes are UTC-aware."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    role: str
    created_by: str | None
    created_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def from_row(cls, row: ApiKey) -> ApiKeyInfo:
        return cls(id=row.id, name=row.name, prefix=row.prefix, scopes=list(row.scopes or []),
                   role=row.role, created_by=row.created_by,
                   created_at=_opt_utc(row.created_at), revoked_at=_opt_utc(row.revoked_at),
                   last_used_at=_opt_utc(row.last_used_at))


@dataclass(frozen=True)
class CreatedApiKey:
    key: str  # the full key: shown to the creator once, never stored
    info: ApiKeyInfo


def create_api_key(session: Session, name: str, scopes: Sequence[str], *, role: str = "service",
                   created_by: str | None = None) -> CreatedApiKey:
    """Create and commit a key; the full key is in the result and nowhere else."""
    name = (name or "").strip()
    if not 1 <= len(name) <= 128:
        raise InvalidInput("name must be 1-128 characters", field="name")
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    scope_list = validate_scopes(scopes)
    for _ in range(5):  # a 48-bit prefix collision is astronomically rare; retry anyway
        prefix = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = ApiKey(name=name, prefix=prefix, key_hash=_hash_secret(prefix, secret),
                     scopes=scope_list, role=role, created_by=created_by)
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            continue
        return CreatedApiKey(key=f"{KEY_PREFIX}_{prefix}_{secret}", info=ApiKeyInfo.from_row(row))
    raise RuntimeError("could not allocate a unique API key prefix")


def list_api_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKeyInfo]:
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.prefix)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return [ApiKeyInfo.from_row(r) for r in session.scalars(stmt)]


def revoke_api_key(session: Session, key_id: str) -> ApiKeyInfo:
    """Revoke by id (commits); revoking a revoked key is a no-op. NotFound when unknown."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound("no such API key", key_id=key_id)
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.commit()
    return ApiKeyInfo.from_row(row)


def authenticate_api_key(session: Session, key: str, *, now: datetime | None = None) -> ApiKey:
    """The live ApiKey row for this full key, else ApiKeyInvalid (401).

    Malformed, unknown, wrong-secret and revoked keys all give the same error.
    ``last_used_at`` is refreshed (and committed) at most once a minute per key.
    """
    parsed = parse_key(key)
    if parsed is None:
        raise ApiKeyInvalid("invalid API key")
    prefix, secret = parsed
    presented = _hash_secret(prefix, secret)
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None or not hmac.compare_digest(presented, row.key_hash) \
            or row.revoked_at is not None:
        raise ApiKeyInvalid("invalid API key")
    now = now or datetime.now(UTC)
    if row.last_used_at is None or now - _as_utc(row.last_used_at) >= _LAST_USED_EVERY:
        row.last_used_at = now
        session.commit()
    return row


def has_scope(scopes: Iterable[str], scope: str) -> bool:
    granted = set(scopes)
    return "*" in granted or scope in granted


def require_scope(key: ApiKey | ApiKeyInfo | Iterable[str], scope: str) -> None:
    """Forbidden (insufficient_scope) unless the key grants ``scope`` (``*`` grants all)."""
    if scope not in SCOPES or scope == "*":
        raise ValueError(f"not a scope to require: {scope!r}")  # a bug in the caller
    if isinstance(key, str):
        raise TypeError("require_scope takes an ApiKey or a list of scopes, not a string")
    scopes = key.scopes if isinstance(key, ApiKey | ApiKeyInfo) else key
    if not has_scope(scopes or [], scope):
        raise InsufficientScope(f"this API key lacks the {scope!r} scope", scope=scope)
