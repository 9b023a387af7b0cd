"""Access tokens (JWT HS256) and rotating refresh tokens with reuse detection.

Access token: a JWT signed with ``settings.secret_key`` (HS256 only), claims
``iss``="facesocial", ``sub`` (user id), ``role``, ``type``="access", ``iat``,
``exp``, ``jti``. Stateless: it cannot be revoked before ``exp``; keep
``access_token_ttl_s`` short (default 15 min).

Refresh token: 32 random bytes, urlsafe-base64, opaque. The database keeps
only its sha256 (a leaked table gives no usable token) in ``RefreshToken``,
with a ``family`` id shared by every token descended from one login.
:meth:`TokenService.rotate` revokes the presented token and issues a new pair
in the same family. Presenting a token that was already rotated means it was
copied: the whole family is revoked (both the thief's and the user's chain
die) and the call fails with ``token_reused``. The revoke is a conditional
UPDATE (``... WHERE revoked_at IS NULL``) so two concurrent rotations of the
same token cannot both succeed: the loser is treated as reuse.

Every method that changes rows commits (including the family revocation
before raising ``token_reused``, which must survive the request failing).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from facesocial.db.models import RefreshToken, User, new_id
from facesocial.errors import (
    ConfigurationError,
    InvalidCredentials,
    TokenExpired,
    TokenInvalid,
    TokenReused,
    TokenRevoked,
    TokenWrongType,
)
from facesocial.settings import DEFAULT_SECRET, Settings

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
ISSUER = "facesocial"
MIN_SECRET_BYTES = 32
IAT_LEEWAY_S = 60  # tolerated clock skew between API processes for "issued in the future"
_MAX_TOKEN_CHARS = 4096


def check_secret(settings: Settings) -> None:
    """Refuse a weak ``secret_key`` in production (ConfigurationError); warn in development."""
    secret = settings.secret_key or ""
    problems = []
    if secret == DEFAULT_SECRET:
        problems.append("it is the built-in default")
    if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        problems.append(f"it is shorter than {MIN_SECRET_BYTES} bytes")
    if not problems:
        return
    msg = "FACESOCIAL_SECRET_KEY is unsafe: " + " and ".join(problems)
    if settings.env == "production":
        raise ConfigurationError(msg + "; set a random secret, e.g. "
                                 "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`")
    log.warning("%s (accepted because env=%s)", msg, settings.env)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _as_utc(dt: datetime) -> datetime:
    """SQLite gives naive datetimes back even for timezone=True columns: they are UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@dataclass(frozen=True)
class AccessClaims:
    sub: str
    role: str
    jti: str
    iat: int
    exp: int
    raw: dict[str, Any]


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int  # access token lifetime, seconds
    refresh_expires_in: int
    user_id: str
    family: str
    token_type: str = "bearer"


class TokenService:
    """Issue / decode access tokens; issue / rotate / revoke refresh tokens.

    ``clock`` returns epoch seconds (tests inject a fake one); it drives ``iat``,
    ``exp``, expiry checks and the refresh tokens' timestamps.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        check_secret(settings)
        self._secret = settings.secret_key
        self.access_ttl_s = int(settings.access_token_ttl_s)
        self.refresh_ttl_s = int(settings.refresh_token_ttl_s)
        self.clock = clock

    def _now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # --- access tokens -------------------------------------------------------
    def issue_access(self, user_id: str, role: str, *, extra: dict[str, Any] | None = None) -> str:
        now = int(self.clock())
        claims: dict[str, Any] = dict(extra or {})
        claims.update(iss=ISSUER, sub=str(user_id), role=role, type="access", iat=now,
                      exp=now + self.access_ttl_s, jti=uuid.uuid4().hex)
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode_access(self, token: str) -> AccessClaims:
        """Verified claims, or TokenInvalid / TokenWrongType / TokenExpired.

        The signature is checked first, so a forged token is "invalid", never
        "expired". Time claims are checked against the injected clock.
        """
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
            raise TokenInvalid("malformed token")
        try:
            payload = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM],
                options={"require": ["iss", "sub", "type", "iat", "exp", "jti"],
                         "verify_exp": False, "verify_iat": False, "verify_nbf": False,
                         "verify_iss": False, "verify_aud": False})
        except jwt.InvalidSignatureError as exc:
            raise TokenInvalid("token signature is invalid") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenInvalid(f"token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidTokenError as exc:  # DecodeError, InvalidAlgorithmError, ...
            raise TokenInvalid("malformed token") from exc
        if payload.get("iss") != ISSUER:
            raise TokenInvalid("token was not issued by facesocial")
        if payload.get("type") != "access":
            raise TokenWrongType("not an access token", type=str(payload.get("type"))[:32])
        iat, exp = payload.get("iat"), payload.get("exp")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (iat, exp)):
            raise TokenInvalid("token time claims must be integers")
        if not isinstance(payload.get("sub"), str) or not isinstance(payload.get("role"), str):
            raise TokenInvalid("token sub and role must be strings")
        now = self.clock()
        if iat > now + IAT_LEEWAY_S:
            raise TokenInvalid("token is issued in the future")
        if now >= exp:
            raise TokenExpired("access token expired", expired_at=exp)
        return AccessClaims(sub=payload["sub"], role=payload["role"], jti=str(payload["jti"]),
                            iat=iat, exp=exp, raw=payload)

    # --- refresh tokens ------------------------------------------------------
    def _new_refresh(self, session: Session, user_id: str, family: str) -> str:
        token = secrets.token_urlsafe(32)
        now = self._now_dt()
        session.add(RefreshToken(user_id=user_id, token_hash=hash_refresh_token(token),
                                 family=family, created_at=now,
                                 expires_at=now + timedelta(seconds=self.refresh_ttl_s)))
        return token

    def _pair(self, session: Session, user: User, family: str) -> TokenPair:
        refresh = self._new_refresh(session, user.id, family)
        return TokenPair(access_token=self.issue_access(user.id, user.role), refresh_token=refresh,
                         expires_in=self.access_ttl_s, refresh_expires_in=self.refresh_ttl_s,
                         user_id=user.id, family=family)

    def issue_pair(self, session: Session, user: User) -> TokenPair:
        """A new login: a new refresh-token family (commits)."""
        if not user.active:
            raise InvalidCredentials("invalid username or password")
        pair = self._pair(session, user, new_id())
        session.commit()
        return pair

    def _find(self, session: Session, refresh_token: str) -> RefreshToken | None:
        if not isinstance(refresh_token, str) or not refresh_token \
                or len(refresh_token) > _MAX_TOKEN_CHARS:
            return None
        return session.scalar(select(RefreshToken).where(
            RefreshToken.token_hash == hash_refresh_token(refresh_token)))

    def revoke_family(self, session: Session, family: str) -> int:
        """Revoke every live token of a family (commits); the number revoked."""
        res = session.execute(update(RefreshToken)
                              .where(RefreshToken.family == family,
                                     RefreshToken.revoked_at.is_(None))
                              .values(revoked_at=self._now_dt()))
        session.commit()
        return res.rowcount or 0  # type: ignore[attr-defined]

    def revoke_user(self, session: Session, user_id: str) -> int:
        """Log a user out everywhere: revoke all their refresh tokens (commits)."""
        res = session.execute(update(RefreshToken)
                              .where(RefreshToken.user_id == user_id,
                                     RefreshToken.revoked_at.is_(None))
                              .values(revoked_at=self._now_dt()))
        session.commit()
        return res.rowcount or 0  # type: ignore[attr-defined]

    def _reuse(self, session: Session, row: RefreshToken) -> TokenReused:
        family, user_id = row.family, row.user_id
        n = self.revoke_family(session, family)
        log.warning("refresh token reuse detected (user %s, family %s): revoked %d live token(s)",
                    user_id, family, n)
        return TokenReused("refresh token was already used; the session has been revoked",
                           family=family)

    def rotate(self, session: Session, refresh_token: str) -> TokenPair:
        """Exchange a live refresh token for a new pair in the same family (commits).

        Unknown token -> TokenInvalid; expired -> TokenExpired; a token of a
        logged-out family -> TokenRevoked; an already-rotated token of a live
        family -> the family is revoked, then TokenReused; user gone or
        deactivated -> the family is revoked, then InvalidCredentials.
        """
        row = self._find(session, refresh_token)
        if row is None:
            raise TokenInvalid("unknown refresh token")
        now = self._now_dt()
        if row.revoked_at is not None:
            live = session.scalar(select(RefreshToken.id).where(
                RefreshToken.family == row.family, RefreshToken.revoked_at.is_(None)).limit(1))
            if live is not None:
                raise self._reuse(session, row)
            raise TokenRevoked("refresh token was revoked")
        if now >= _as_utc(row.expires_at):
            raise TokenExpired("refresh token expired")
        user = session.get(User, row.user_id)
        if user is None or not user.active:
            self.revoke_family(session, row.family)
            raise InvalidCredentials("user is unknown or deactivated")
        # Claim the token atomically: only one caller can flip revoked_at from NULL.
        res = session.execute(update(RefreshToken)
                              .where(RefreshToken.id == row.id, RefreshToken.revoked_at.is_(None))
                              .values(revoked_at=now)
                              .execution_options(synchronize_session=False))
        if res.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            raise self._reuse(session, row)
        pair = self._pair(session, user, row.family)
        session.commit()
        return pair

    def logout(self, session: Session, refresh_token: str) -> bool:
        """Revoke the family of this refresh token (commits). False when the token is unknown."""
        row = self._find(session, refresh_token)
        if row is None:
            return False
        self.revoke_family(session, row.family)
        return True
